"""One view per manifest row for contact sheets and the review page.

results.parquet (one row per manifest row) gives the manifest fields; the ledger gives status,
attempts and cost. Where both know a row, the ledger's status wins (it is the audited record);
without results.parquet (a killed driver) the rows come from the ledger's attempts alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .usage import Analysis

DISPLAY_STATUS = {"done": "done", "cache-hit": "cache-hit", "failed": "failed", "pending": "not-run"}


@dataclass
class RowView:
    row_id: str
    row_index: int
    status: str  # done, cache-hit, failed, not-run
    instruction: str = ""
    seed: int | None = None
    product_id: str | None = None
    variant: str | None = None
    image: str | None = None  # the source as the manifest names it
    output_uri: str | None = None
    attempts: int = 0
    error_class: str | None = None
    reason: str | None = None
    cost: float = 0.0
    busy_seconds: float = 0.0
    key: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """Contact sheet grouping: the product, else the source image."""
        if self.product_id not in (None, ""):
            return f"product {self.product_id}"
        return f"source {self.image or '(unknown)'}"


def _text(value: Any) -> str | None:
    if value is None:
        return None
    try:
        import math

        if isinstance(value, float) and math.isnan(value):
            return None
    except TypeError:
        pass
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def read_results(run_dir: Path) -> list[dict[str, Any]] | None:
    path = run_dir / "results.parquet"
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def load_rows(run_dir: str | Path, analysis: Analysis) -> tuple[list[RowView], list[str]]:
    """Row views sorted by manifest order, and notes on disagreements between results and ledger."""
    run_dir = Path(run_dir)
    notes: list[str] = []
    results = read_results(run_dir)
    views: list[RowView] = []
    seen: set[str] = set()
    if results is None:
        notes.append("results.parquet is missing; rows shown are those the ledger mentions")
    for rec in results or []:
        row_id = str(rec.get("row_id"))
        seen.add(row_id)
        summary = analysis.rows.get(row_id)
        status = str(rec.get("status") or "not-run")
        if summary is not None:
            ledger_status = DISPLAY_STATUS[summary.status]
            if ledger_status != status:
                notes.append(f"row {row_id}: results.parquet says {status}, ledger says {ledger_status}; showing the ledger's")
            status = ledger_status
        views.append(RowView(
            row_id=row_id,
            row_index=_int(rec.get("row_index")) if rec.get("row_index") is not None else len(views),
            status=status,
            instruction=_text(rec.get("instruction")) or "",
            seed=_int(rec.get("seed")),
            product_id=_text(rec.get("product_id")),
            variant=_text(rec.get("variant")),
            image=_text(rec.get("image")),
            output_uri=(summary.output_uri if summary and summary.output_uri else _text(rec.get("output_uri"))),
            attempts=sum(a.get("outcome") != "cache-hit" for a in summary.attempts) if summary else (_int(rec.get("attempts")) or 0),
            error_class=(summary.error_class if summary else None) or _text(rec.get("error_class")),
            reason=(summary.error if summary else None) or _text(rec.get("reason")),
            cost=summary.cost if summary else 0.0,
            busy_seconds=summary.busy_seconds if summary else 0.0,
            key=_text(rec.get("key")),
            meta={k: _text(v) for k, v in rec.items() if k.startswith("meta_")},
        ))
    for row_id, summary in analysis.rows.items():
        if row_id in seen:
            continue
        if results is not None:
            notes.append(f"row {row_id} is in the ledger but not in results.parquet")
        last = summary.last
        views.append(RowView(
            row_id=row_id,
            row_index=summary.row_index if summary.row_index is not None else len(views),
            status=DISPLAY_STATUS[summary.status],
            instruction=_text(last.get("instruction")) or "",
            seed=_int(last.get("seed")),
            product_id=_text(last.get("product_id")),
            variant=_text(last.get("variant")),
            image=_text(last.get("image")),
            output_uri=summary.output_uri,
            attempts=sum(a.get("outcome") != "cache-hit" for a in summary.attempts),
            error_class=summary.error_class,
            reason=summary.error,
            cost=summary.cost,
            busy_seconds=summary.busy_seconds,
            key=_text(last.get("key")),
        ))
    views.sort(key=lambda v: (v.row_index, v.row_id))
    return views, notes
