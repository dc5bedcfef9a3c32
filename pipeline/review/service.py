"""The review session's logic, without HTTP: rows with their decisions, filters, paging, decide.

The server (``pipeline.review.server``) only maps routes onto these calls, so the rules (which
rows can be decided, what a bulk decision covers, what a bad request is told) live here once.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .decisions import (
    DECISIONS,
    Decision,
    DecisionError,
    DecisionLog,
    decision_record,
    decisions_path,
)
from .runs import ReviewRow, RunTarget, load_review_rows, manifest_of

FILTERS = ("product", "variant", "flag", "decision", "status")
MAX_PAGE = 500
SOURCE_SIZE = 1024  # sources are shown downscaled to this many pixels on a side
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}


class RequestError(ValueError):
    """A request the session refuses (unknown rows, a failed row, a bad filter); says why."""


def _matches(row: ReviewRow, decision: Decision | None, filters: Mapping[str, str]) -> bool:
    for name, want in filters.items():
        if name == "product" and row.product_id != want:
            return False
        if name == "variant" and row.variant != want:
            return False
        if name == "flag" and want not in row.flags:
            return False
        if name == "status" and row.status != want:
            return False
        if name == "decision":
            got = decision.decision if decision else ("none" if row.reviewable else "n/a")
            if got != want:
                return False
    return True


def clean_filters(raw: Mapping[str, Any]) -> dict[str, str]:
    """The known, non-empty filters of a request; an unknown filter is an error (a typo)."""
    filters: dict[str, str] = {}
    for name, value in raw.items():
        if name not in FILTERS:
            raise RequestError(f"unknown filter {name!r}; filters are {', '.join(FILTERS)}")
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise RequestError(f"filter {name} must be text, got {type(value).__name__}")
        filters[name] = value
    return filters


class ReviewSession:
    """One run (or night) under review by one reviewer, over OUT's decisions log."""

    def __init__(self, target: RunTarget, reviewer: str, log: DecisionLog | None = None) -> None:
        self.target = target
        self.reviewer = reviewer
        self.log = log or DecisionLog(decisions_path(target.out_dir))
        self.rows = load_review_rows(target.run_dir)
        self.by_id = {r.row_id: r for r in self.rows}
        self._policy: Any = None
        self._policy_ready = False

    # -- reading ------------------------------------------------------------------------
    def meta(self) -> dict[str, Any]:
        decisions = self.log.current()
        counts: Counter[str] = Counter()
        for row in self.rows:
            d = decisions.get(row.key or "") if row.reviewable else None
            counts[d.decision if d else ("waiting" if row.reviewable else row.status)] += 1
        return {
            "run_id": self.target.run_id, "reviewer": self.reviewer, "total": len(self.rows),
            "products": sorted({r.product_id for r in self.rows if r.product_id}),
            "variants": sorted({r.variant for r in self.rows if r.variant}),
            "flags": sorted({f for r in self.rows for f in r.flags}),
            "statuses": sorted({r.status for r in self.rows}),
            "decisions": list(DECISIONS), "counts": dict(counts), "marks": self.marks(),
        }

    def marks(self) -> dict[str, int]:
        """Rows per flag, per T5 cut and with input notes: what the page's summary counts."""
        marks: Counter[str] = Counter(f for r in self.rows for f in r.flags if f != "failed")
        marks["T5 cut"] = sum(r.truncated for r in self.rows)
        marks["with notes"] = sum(bool(r.notes) for r in self.rows)
        return {k: n for k, n in sorted(marks.items()) if n}

    def query(self, filters: Mapping[str, Any], offset: int = 0, limit: int = 100) -> dict[str, Any]:
        """One page of the rows matching ``filters``, with their decisions."""
        filters = clean_filters(filters)
        if offset < 0 or not 1 <= limit <= MAX_PAGE:
            raise RequestError(f"offset must be >= 0 and limit 1..{MAX_PAGE}")
        decisions = self.log.current()
        matching = [r for r in self.rows
                    if _matches(r, decisions.get(r.key or "") if r.reviewable else None, filters)]
        page = matching[offset:offset + limit]
        return {"total": len(matching), "offset": offset,
                "rows": [self.row_json(r, decisions) for r in page]}

    def row_json(self, row: ReviewRow, decisions: Mapping[str, Decision]) -> dict[str, Any]:
        decision = decisions.get(row.key or "") if row.reviewable else None
        return {"i": row.index, "row_id": row.row_id, "status": row.status, "key": row.key,
                "product_id": row.product_id, "variant": row.variant,
                "instruction": row.instruction, "seed": row.seed, "reason": row.reason,
                "flags": list(row.flags), "reviewable": row.reviewable,
                "truncated": row.truncated, "notes": row.notes, "cost": row.cost,
                "carried": row.status == "cache-hit", "source": row.image is not None,
                "redo_of": row.redo_of,
                "decision": decision.as_json() if decision else None}

    # -- deciding -----------------------------------------------------------------------
    def decide(self, decision: str, *, note: str = "", row_ids: Sequence[str] | None = None,
               filters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record ``decision`` for the rows named (all must exist and have an output) or, in
        bulk, for every row matching ``filters`` that has one (failed rows are counted, not
        decided). Nothing is written when the request is refused."""
        if (row_ids is None) == (filters is None):
            raise RequestError("give either rows (a list of row ids) or filter (a bulk decision)")
        if row_ids is not None:
            rows, skipped = self._named(row_ids), 0
        else:
            chosen = clean_filters(filters or {})
            if not chosen:
                raise RequestError("a bulk decision needs at least one filter (product, variant, "
                                   "flag, decision or status); decide rows one by one otherwise")
            decisions = self.log.current()
            matching = [r for r in self.rows
                        if _matches(r, decisions.get(r.key or "") if r.reviewable else None, chosen)]
            rows = [r for r in matching if r.reviewable]
            skipped = len(matching) - len(rows)
        try:
            records = [decision_record(r.key or "", decision, reviewer=self.reviewer, note=note,
                                       row_id=r.row_id, run_id=self.target.run_id) for r in rows]
        except DecisionError as exc:
            raise RequestError(str(exc)) from None
        self.log.append(records)
        return {"recorded": len(records), "skipped": skipped, "decision": decision}

    def _named(self, row_ids: Sequence[str]) -> list[ReviewRow]:
        if not isinstance(row_ids, list | tuple) or not all(isinstance(r, str) for r in row_ids):
            raise RequestError("rows must be a list of row ids (text)")
        if not row_ids:
            raise RequestError("rows is empty: name at least one row id")
        unknown = [r for r in row_ids if r not in self.by_id]
        if unknown:
            raise RequestError(f"unknown row id(s) {', '.join(map(repr, unknown[:10]))}"
                               f"{' and more' if len(unknown) > 10 else ''} in run "
                               f"{self.target.run_id}; reload the page")
        rows = [self.by_id[r] for r in row_ids]
        bad = [r for r in rows if not r.reviewable]
        if bad:
            r = bad[0]
            why = f"it failed ({r.reason})" if r.status == "failed" else f"its status is {r.status}"
            raise RequestError(f"row {r.row_id} has no output to decide on: {why}. Fix its input "
                               "and run again; the new output can then be reviewed")
        return rows

    # -- images -------------------------------------------------------------------------
    def row_at(self, index: int) -> ReviewRow:
        if not 0 <= index < len(self.rows):
            raise LookupError(index)
        return self.rows[index]

    def output_image(self, index: int) -> tuple[bytes, str]:
        """The stored output of row ``index`` (bytes, content type); LookupError when none."""
        row = self.row_at(index)
        if not row.reviewable or not row.output_uri:
            raise LookupError(index)
        from pipeline.store import filesystem_for

        fs, path = filesystem_for(row.output_uri)
        try:
            with fs.open_input_stream(path) as f:
                data = f.read()
        except (FileNotFoundError, OSError):
            raise LookupError(index) from None
        ext = row.output_uri.rsplit(".", 1)[-1].lower()
        return data, CONTENT_TYPES.get(ext, "application/octet-stream")

    def source_image(self, index: int) -> tuple[bytes, str]:
        """Row ``index``'s source, read by the run's own rule (inside the manifest's folder or
        an image root), downscaled, as PNG; LookupError when it cannot be shown."""
        row = self.row_at(index)
        policy = self._source_policy()
        if policy is None or not row.image:
            raise LookupError(index)
        try:
            resolved = policy(row.image)
        except ValueError:
            raise LookupError(index) from None
        return _thumbnail(resolved, self._max_pixels()), "image/png"

    def _source_policy(self) -> Any:
        if not self._policy_ready:
            from pipeline.reports.review_build import source_policy

            self._policy = source_policy(self.target.run_dir, manifest_of(self.target))
            self._policy_ready = True
        return self._policy

    def _max_pixels(self) -> int:
        from pipeline.reports.review_build import source_max_pixels

        return source_max_pixels(self.target.run_dir)


def _thumbnail(resolved: str, max_pixels: int) -> bytes:
    from PIL import Image, ImageOps

    from pipeline.reports.review_build import as_model_sees
    from pipeline.store import filesystem_for

    if "://" in resolved:
        fs, path = filesystem_for(resolved)
        try:
            with fs.open_input_stream(path) as f:
                raw: Any = io.BytesIO(f.read())
        except OSError:
            raise LookupError(resolved) from None
    else:
        raw = Path(resolved)
    try:
        with Image.open(raw) as img:
            if img.width * img.height > max_pixels:
                raise LookupError(resolved)  # the run refused it too: never decoded here
            img.draft("RGB", (SOURCE_SIZE, SOURCE_SIZE))
            # upright and flattened on white: what the model was given
            img = as_model_sees(ImageOps.exif_transpose(img))
            img.thumbnail((SOURCE_SIZE, SOURCE_SIZE))
            out = io.BytesIO()
            img.save(out, "PNG", compress_level=1)
            return out.getvalue()
    except (OSError, ValueError, Image.DecompressionBombError):
        raise LookupError(resolved) from None
