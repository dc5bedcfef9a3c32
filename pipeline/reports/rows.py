"""The rows the review page and contact sheets show, and the counts of those they leave out.

results.parquet (one row per manifest row) gives the manifest fields; the ledger gives status,
attempts and cost. Where both know a row, the ledger's status wins (it is the audited record);
without results.parquet (a killed driver) the rows come from the ledger's attempts alone.

Only rows that need a reviewer's eyes after this run get a view: rows generated in this run
(done) and failed rows. Cache hits were reviewed in the run that generated them and rows not run
have nothing to look at: both are only counted (results.parquet lists them). At most `max_rows`
views are kept (failed rows first, then generated rows, each in manifest order); the rest are
counted as left out. results.parquet is read in record batches, so memory follows the cap, not
the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import CLIP_TRUNCATED_NOTE

from .usage import Analysis, RowSummary

DISPLAY_STATUS = {"done": "done", "cache-hit": "cache-hit", "failed": "failed", "not-run": "not-run"}
REVIEWED_STATUSES = ("done", "failed")
DEFAULT_MAX_REVIEW_ROWS = 2000
MAX_NOTES = 20  # per kind of disagreement; the rest are counted
BATCH_ROWS = 8192


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
    truncated: bool = False  # instruction cut at the T5 token limit (results ``truncated``)
    clip_truncated: bool = False  # cut at CLIP's limit (the row's CLIP_TRUNCATED_NOTE)
    notes: str | None = None  # what was done to the input (results ``notes``: EXIF, alpha, ...)

    @property
    def text_cuts(self) -> list[str]:
        """Which text encoders saw only the start of the instruction: "T5", "CLIP"."""
        return [name for name, cut in (("T5", self.truncated), ("CLIP", self.clip_truncated)) if cut]

    @property
    def group(self) -> str:
        """Contact sheet grouping: the product, else the source image."""
        if self.product_id not in (None, ""):
            return f"product {self.product_id}"
        return f"source {self.image or '(unknown)'}"

    @property
    def order(self) -> tuple[int, str]:
        return (self.row_index, self.row_id)


@dataclass
class ReviewScope:
    """How the run's rows split between the review and the counts beside it (they add up to
    `total`, the rows results.parquet and the ledger know)."""

    max_rows: int | None  # None: no cap
    total: int = 0
    by_status: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DISPLAY_STATUS.values(), 0))
    shown: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REVIEWED_STATUSES, 0))

    @property
    def reviewed(self) -> int:
        return sum(self.shown.values())

    @property
    def left_out(self) -> dict[str, int]:
        """Rows that needed review but fell outside the cap, by status."""
        return {s: self.by_status[s] - self.shown[s] for s in REVIEWED_STATUSES}


@dataclass
class ReviewSelection:
    views: list[RowView]  # in manifest order
    scope: ReviewScope
    notes: list[str]


def _text(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def _int(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _clip_cut(notes: Any) -> bool:
    return CLIP_TRUNCATED_NOTE in (_text(notes) or "")


def iter_results(run_dir: Path) -> Any:
    """results.parquet's rows as dicts, one record batch at a time; None when it is missing."""
    path = run_dir / "results.parquet"
    if not path.exists():
        return None
    import pyarrow.parquet as pq

    def rows() -> Any:
        with pq.ParquetFile(path) as handle:
            for batch in handle.iter_batches(batch_size=BATCH_ROWS):
                yield from batch.to_pylist()
    return rows()


class _Notes:
    """Disagreement notes, at most MAX_NOTES of each kind, then a count of the rest."""

    def __init__(self) -> None:
        self.kept: dict[str, list[str]] = {}
        self.more: dict[str, int] = {}

    def add(self, kind: str, text: str) -> None:
        kept = self.kept.setdefault(kind, [])
        if len(kept) < MAX_NOTES:
            kept.append(text)
        else:
            self.more[kind] = self.more.get(kind, 0) + 1

    def lines(self) -> list[str]:
        out: list[str] = []
        for kind, kept in self.kept.items():
            out += kept
            if self.more.get(kind):
                out.append(f"... and {self.more[kind]} more row(s) where {kind}")
        return out


class _Keep:
    """The first `limit` views in manifest order, whatever order they arrive in."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.views: list[RowView] = []

    def offer(self, view: RowView) -> None:
        self.views.append(view)
        if self.limit is not None and len(self.views) >= 2 * self.limit + 64:
            self.trim()

    def trim(self) -> list[RowView]:
        self.views.sort(key=lambda v: v.order)
        if self.limit is not None:
            del self.views[self.limit:]
        return self.views


def _from_results(rec: dict[str, Any], summary: RowSummary | None, status: str, index: int) -> RowView:
    return RowView(
        row_id=str(rec.get("row_id")),
        row_index=_int(rec.get("row_index")) if rec.get("row_index") is not None else index,
        status=status,
        instruction=_text(rec.get("instruction")) or "",
        seed=_int(rec.get("seed")),
        product_id=_text(rec.get("product_id")),
        variant=_text(rec.get("variant")),
        image=_text(rec.get("image")),
        output_uri=(summary.output_uri if summary and summary.output_uri else _text(rec.get("output_uri"))),
        attempts=summary.worked_attempts if summary else (_int(rec.get("attempts")) or 0),
        error_class=(summary.error_class if summary else None) or _text(rec.get("error_class")),
        reason=(summary.error if summary else None) or _text(rec.get("reason")),
        cost=summary.cost if summary else 0.0,
        busy_seconds=summary.busy_seconds if summary else 0.0,
        key=_text(rec.get("key")),
        meta={k: _text(v) for k, v in rec.items() if k.startswith("meta_")},
        truncated=rec.get("truncated") is True,
        clip_truncated=_clip_cut(rec.get("notes")),
        notes=_text(rec.get("notes")),
    )


def _from_ledger(summary: RowSummary, index: int) -> RowView:
    last = summary.last
    return RowView(
        row_id=summary.row_id,
        row_index=summary.row_index if summary.row_index is not None else index,
        status=DISPLAY_STATUS[summary.status],
        instruction=_text(last.get("instruction")) or "",
        seed=_int(last.get("seed")),
        product_id=_text(last.get("product_id")),
        variant=_text(last.get("variant")),
        image=_text(last.get("image")),
        output_uri=summary.output_uri,
        attempts=summary.worked_attempts,
        error_class=summary.error_class,
        reason=summary.error,
        cost=summary.cost,
        busy_seconds=summary.busy_seconds,
        key=_text(last.get("key")),
        truncated=last.get("truncated") is True,
        clip_truncated=_clip_cut(last.get("notes")),
    )


def select_review_rows(run_dir: str | Path, analysis: Analysis,
                       max_rows: int | None = DEFAULT_MAX_REVIEW_ROWS) -> ReviewSelection:
    """The rows to review (failed first, then generated, at most `max_rows`; None or 0: all),
    in manifest order, with the counts of every row and notes on results/ledger disagreements."""
    run_dir = Path(run_dir)
    max_rows = max_rows or None
    scope = ReviewScope(max_rows=max_rows)
    notes = _Notes()
    keep = {"failed": _Keep(max_rows), "done": _Keep(max_rows)}
    results = iter_results(run_dir)
    extra_notes = [] if results is not None else ["results.parquet is missing; rows shown are those the ledger mentions"]
    seen: set[str] = set()  # row ids of results.parquet rows the ledger ran (not its cache hits)
    hits_seen = 0
    position = 0

    def count(status: str) -> bool:
        """Count a row; True when it is one to review (its view is then offered to the cap)."""
        scope.total += 1
        scope.by_status[status] += 1
        return status in keep

    for rec in results or ():
        row_id = str(rec.get("row_id"))
        summary = analysis.rows.get(row_id)
        status = str(rec.get("status") or "not-run")
        if summary is not None:
            seen.add(summary.row_id)  # the analysis' own string: no second copy of every id
            ledger_status: str | None = DISPLAY_STATUS[summary.status]
        elif row_id in analysis.hit_rows:
            hits_seen += 1
            ledger_status = "cache-hit"
        else:
            ledger_status = None
        if ledger_status is not None and ledger_status != status:
            notes.add("the ledger's status wins",
                      f"row {row_id}: results.parquet says {status}, ledger says {ledger_status}; showing the ledger's")
            status = ledger_status
        if status not in DISPLAY_STATUS.values():
            status = "not-run"  # an unknown status in results.parquet: nothing to review
        if count(status):
            keep[status].offer(_from_results(rec, summary, status, position))
        position += 1
    for row_id, summary in analysis.rows.items():
        if row_id in seen:
            continue
        if results is not None:
            notes.add("the ledger has a row results.parquet lacks", f"row {row_id} is in the ledger but not in results.parquet")
        status = DISPLAY_STATUS[summary.status]
        if count(status):
            keep[status].offer(_from_ledger(summary, position))
        position += 1
    unseen_hits = len(analysis.hit_rows) - hits_seen  # only checked for results.parquet rows above
    if unseen_hits > 0:
        if results is not None:
            notes.add("the ledger has a row results.parquet lacks",
                      f"{unseen_hits} cache-hit row(s) are in the ledger but not in results.parquet")
        scope.total += unseen_hits
        scope.by_status["cache-hit"] += unseen_hits
    if results is None:  # rows no attempt reached are known only by the run-start's count
        never_tried = (analysis.figures["rows"]["total"] or 0) - scope.total
        if never_tried > 0:
            scope.total += never_tried
            scope.by_status["not-run"] += never_tried
    failed = keep["failed"].trim()
    room = None if max_rows is None else max(0, max_rows - len(failed))
    done = keep["done"].trim()[:room]
    scope.shown = {"done": len(done), "failed": len(failed)}
    views = sorted(failed + done, key=lambda v: v.order)
    return ReviewSelection(views=views, scope=scope, notes=extra_notes + notes.lines())
