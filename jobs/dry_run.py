"""``job run --dry-run``: the plan of one date (rows, cache hits, rows to generate, estimated
cost) without running it: no model is loaded, no Ray started, no run folder written.

A date with a frozen manifest (an earlier trigger built it) is planned with that one; else
the manifest is built into a temporary folder, as the real trigger would build it. The cost
estimate prices each image to generate at the job's own cost per generated image so far
(its earlier runs' reports: load, idle and failed time included).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from jobs.lock import RunLock
from jobs.retention import job_run_dirs
from jobs.runner import _manifest_for, check_not_future, parse_date, run_config, today_for
from jobs.spec import JobSpec
from pipeline.reports.report_render import money


@dataclass(frozen=True)
class JobDryRun:
    job: str
    date: str
    run_dir: Path
    finished: str | None = None  # run-end status when the date is done: nothing would run
    busy: bool = False  # another process is running the date now
    plan: object | None = None  # pipeline.dry_run.DryRun
    budget: tuple[float, str] | None = None  # the spec's cap (amount, currency)

    def report(self) -> str:
        head = f"job {self.job} {self.date}: dry run (nothing was run or written)"
        if self.finished is not None:
            return (f"{head}\n  already finished ({self.finished}): a trigger would run nothing"
                    f"\n  run folder: {self.run_dir}")
        lines = [head, *self.plan.lines()]  # type: ignore[union-attr]
        if self.budget is not None:
            lines.append(f"  budget:   cap {money(self.budget[0], self.budget[1])}"
                         + _against_cap(self.plan.estimated_cost, self.budget[0]))  # type: ignore[union-attr]
        if self.busy:
            lines.append("  note:     the date is running in another process now: a trigger "
                         "would be refused (exit 4)")
        return "\n".join(lines)


def _against_cap(estimate: float | None, cap: float) -> str:
    if estimate is None:
        return ""
    if estimate <= cap:
        return " (the estimate is within it)"
    return " (the estimate is above it: the run would stop at the cap, exit 3)"


def dry_run_job(spec: JobSpec, date: str | None = None) -> JobDryRun:
    """Plan ``spec`` for ``date`` (default: today in its timezone). Raises what ``run_job``
    raises before any work (JobError, pipeline ConfigError)."""
    from pipeline.dry_run import plan_only
    from pipeline.resume import ledger_end, resumable_end

    today = today_for(spec)
    date = parse_date(date) if date else today
    check_not_future(spec, date, today)
    run_dir = spec.run_dir(date)
    exists, status = ledger_end(run_dir / "ledger.jsonl")
    if not resumable_end(exists, status):
        return JobDryRun(spec.name, date, run_dir, finished=str(status))
    earlier = [path for _, path in job_run_dirs(spec.runs_dir, spec.name)]
    with tempfile.TemporaryDirectory(prefix="kontext-dry-run-") as tmp:
        manifest, roots = _manifest_for(spec, run_dir, frozen=Path(tmp) / "manifest.parquet")
        config = run_config(spec, spec.run_id(date), manifest, roots, progress=False,
                            reports=False)
        plan = plan_only(config, basis_runs=earlier)
    budget = (spec.budget.amount, spec.budget.currency) if spec.budget is not None else None
    return JobDryRun(spec.name, date, run_dir, busy=RunLock(run_dir).held_elsewhere(),
                     plan=plan, budget=budget)
