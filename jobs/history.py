"""A job's runs, one line per date: status, images generated, cache hits, failures, cost.

Figures come from each run's ledger through the reports' rollup (pipeline.reports), priced
as the run was (the pricing frozen in its config.json), so they agree with its report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.lock import run_dir_busy
from jobs.retention import job_run_dirs
from jobs.spec import JobSpec


@dataclass
class HistoryRow:
    date: str
    run_id: str
    run_dir: Path
    status: str  # complete | failed-rows | budget-stopped | interrupted | unfinished | running
    images: int = 0  # generated this run (ok rows)
    hits: int = 0
    failed: int = 0
    not_run: int = 0  # not reached (budget stop, interruption)
    cost: float | None = None
    currency: str | None = None
    error: str | None = None  # why the figures could not be read

    def to_dict(self) -> dict[str, Any]:
        return {"date": self.date, "run_id": self.run_id, "run_dir": str(self.run_dir),
                "status": self.status, "images": self.images, "hits": self.hits,
                "failed": self.failed, "not_run": self.not_run, "cost": self.cost,
                "currency": self.currency, "error": self.error}


def job_history(spec: JobSpec) -> tuple[list[HistoryRow], dict[str, Any] | None]:
    """Rows oldest first, and the rollup of every readable run (None when there is none or
    runs are priced in different currencies)."""
    from pipeline.reports import rollup

    rows: list[HistoryRow] = []
    readable: list[Path] = []
    for day, run_dir in job_run_dirs(spec.runs_dir, spec.name):
        row = HistoryRow(day.isoformat(), run_dir.name, run_dir, "unfinished")
        rows.append(row)
        if not (run_dir / "ledger.jsonl").exists():
            row.status = "running" if run_dir_busy(run_dir) else "no ledger"
            continue
        try:
            figures = rollup([run_dir])
        except Exception as exc:  # a damaged run must not hide the others
            row.error = f"{type(exc).__name__}: {exc}"
            continue
        run = figures["runs"][0]
        row.status = run["status"]
        if row.status == "unfinished" and run_dir_busy(run_dir):
            row.status = "running"
        counts = run["rows"]
        row.images, row.hits, row.failed = counts["done"], counts["cache_hits"], counts["failed"]
        row.not_run = counts["unfinished"]
        row.cost, row.currency = run["cost"], figures["cost"]["currency"]
        readable.append(run_dir)
    totals = None
    if readable:
        try:
            totals = rollup(readable)
        except ValueError:
            totals = None
    return rows, totals


def _money(value: float | None, currency: str | None) -> str:
    """As the report prints money ($0.0000758, not 7.58e-05); '-' when the run has no cost."""
    from pipeline.reports.report_render import money

    return "-" if value is None else money(value, currency or "USD")


def render_history(spec: JobSpec, rows: list[HistoryRow], totals: dict[str, Any] | None) -> str:
    """A plain-text table for the terminal."""
    if not rows:
        return f"job {spec.name}: no runs yet under {spec.runs_dir}"
    header = ("date", "status", "images", "hits", "failed", "not run", "cost")
    table = [header] + [
        (r.date, r.status if not r.error else "unreadable", str(r.images), str(r.hits),
         str(r.failed), str(r.not_run), _money(r.cost, r.currency)) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [f"job {spec.name}: {len(rows)} run(s) under {spec.runs_dir}"]
    for line in table:
        lines.append("  ".join(cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                               for i, cell in enumerate(line)).rstrip())
    if totals is not None:
        r = totals["rows"]
        lines.append(f"total: {r['done']} images, {r['cache_hits']} hits, {r['failed']} failed, "
                     f"{_money(totals['cost']['total'], totals['cost']['currency'])}")
    for r in rows:
        if r.error:
            lines.append(f"  {r.date}: figures unreadable: {r.error}")
    return "\n".join(lines)
