"""The end-of-run summary's lines that come from the run folder.

``print_summary`` (pipeline.runner) says where everything went; these add what a person needs
to act on without opening the results table:

- ``failure_lines``: the failed rows' reasons, grouped (reasons that differ only in a quoted
  path or a number are one group), most frequent first, a few of them, with counts;
- the flagged, cut and noted rows: ``pipeline.reports.results_columns.summary_lines`` (reused);
- ``resume_line``: a resumed run says how much its earlier invocations had already done.

Every function reads the folder leniently: a missing or damaged file gives no line, never an
error (the summary is printed after the run's work is safe).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.ledger import read_ledger
from pipeline.reports.results_columns import RESULTS, summary_lines

TOP_REASONS = 3  # reason groups listed; the rest are counted in one line
FINISHED = ("ok", "cache-hit", "failed-permanent")  # an attempt outcome that ends a row
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def run_summary_lines(run_dir: str | Path, top: int = TOP_REASONS) -> list[str]:
    """Every line this module adds to the summary, in print order."""
    return [*failure_lines(run_dir, top), *summary_lines(run_dir)]


def failure_lines(run_dir: str | Path, top: int = TOP_REASONS) -> list[str]:
    """The failed rows of results.parquet by reason: a header, ``top`` groups (count, error
    class, one reason as written, one row id), then a count of the other groups."""
    failed = _failed_rows(Path(run_dir) / RESULTS)
    if not failed:
        return []
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row_id, error_class, reason in failed:
        groups.setdefault((error_class, reason_pattern(reason)), []).append((row_id, reason))
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))  # stable: first seen first
    lines = [f"  failed:   {len(failed)} row(s), by reason (results.parquet: status 'failed', "
             "column reason):"]
    for (error_class, _), rows in ranked[:top]:
        row_id, reason = rows[0]
        more = f" and {len(rows) - 1} more" if len(rows) > 1 else ""
        lines.append(f"    {len(rows)} × {error_class}: {reason} (row {row_id!r}{more})")
    rest = ranked[top:]
    if rest:
        lines.append(f"    ... and {sum(len(r) for _, r in rest)} row(s) with "
                     f"{len(rest)} other reason(s)")
    return lines


def reason_pattern(reason: str) -> str:
    """What groups reasons: the text with quoted parts and numbers blanked, so 'image 'a.png'
    not found' and 'image 'b.png' not found' are one reason."""
    return _NUMBER.sub("#", _QUOTED.sub("'…'", reason))


def _failed_rows(path: Path) -> list[tuple[str, str, str]]:
    """(row id, error class, reason) of each failed row, in manifest order ([] unreadable)."""
    try:
        names = pq.read_schema(path).names
        wanted = [c for c in ("row_id", "status", "error_class", "reason") if c in names]
        table = pq.read_table(path, columns=wanted, filters=[("status", "=", "failed")])
    except (OSError, ValueError, pa.ArrowException):
        return []
    col = {n: table.column(n).to_pylist() if n in table.column_names else [None] * table.num_rows
           for n in ("row_id", "error_class", "reason")}
    return [(str(r), c or "error", (why or "no reason recorded").strip())
            for r, c, why in zip(col["row_id"], col["error_class"], col["reason"], strict=True)]


def resume_line(run_dir: str | Path) -> str | None:
    """'resuming: N of M already done ...' when the ledger's last invocation resumed the run
    (None for a first invocation or an unreadable ledger)."""
    try:
        records = list(read_ledger(Path(run_dir) / "ledger.jsonl", expand_cache_hits=False))
    except (OSError, ValueError):
        return None
    starts = [i for i, r in enumerate(records) if r.get("type") == "run-start"]
    if len(starts) < 2:
        return None
    last = starts[-1]
    rows_total = records[last].get("rows_total")
    return resuming_text(_finals(records[:last]), rows_total, len(starts) - 1)


def resume_line_from_history(history: Any, rows_total: int) -> str | None:
    """The same line from pipeline.resume.RunHistory (what the runner already read before the
    run-start): nothing extra to read at the start of a resumed run."""
    if not history.exists or history.invocations < 1:
        return None
    finals = Counter(row.final for row in history.rows.values() if row.final in FINISHED)
    return resuming_text(finals, rows_total, history.invocations)


def resuming_text(finals: Mapping[str, int], rows_total: Any, earlier: int) -> str:
    """The resume line from the earlier invocations' final outcomes per row."""
    done = finals.get("ok", 0) + finals.get("cache-hit", 0)
    failed = finals.get("failed-permanent", 0)
    total = f" of {rows_total}" if isinstance(rows_total, int) else ""
    failed_text = f", {failed} failed for good (they stay failed)" if failed else ""
    return (f"resuming: {done}{total} already done{failed_text} by {earlier} earlier "
            f"invocation(s); the rest run now")


def _finals(records: Iterable[Mapping[str, Any]]) -> Counter:
    """Final outcome per row (the last attempt's), counted."""
    last: dict[int, str] = {}
    for rec in records:
        if rec.get("type") == "attempt" and rec.get("row_index") is not None:
            last[int(rec["row_index"])] = rec.get("outcome")
    return Counter(o for o in last.values() if o in FINISHED)
