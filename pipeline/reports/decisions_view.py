"""The decisions the static review page shows (read-only): OUT/decisions.jsonl as it was when
the page was built, through pipeline.review's reader. Deciding needs `kontext-batch review`."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from .rows import RowView, iter_results

REVIEWABLE = ("done", "cache-hit")


def out_dir_of(run_dir: Path) -> Path:
    """The run's OUT (config.json's "out", else OUT/runs/<run_id>/../..)."""
    from pipeline.run_config import read_config_file

    out = read_config_file(run_dir).get("out")
    return Path(out) if isinstance(out, str) else run_dir.parent.parent


def page_decisions(run_dir: str | Path, views: list[RowView]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """(row_id -> its last decision, for the shown rows; counts over every row of the run with an
    output: approve, reject, redo, waiting, and carried-approve: cache hits approved earlier)."""
    from pipeline.review.decisions import read_decisions

    run_dir = Path(run_dir)
    log = read_decisions(out_dir_of(run_dir))
    shown = {v.row_id: log[v.key].as_json() for v in views
             if v.key and v.status in REVIEWABLE and v.key in log}
    counts: Counter[str] = Counter()
    for rec in iter_results(run_dir) or ():
        key = rec.get("key")
        if rec.get("status") not in REVIEWABLE or not key:
            continue
        decision = log.get(str(key))
        counts[decision.decision if decision else "waiting"] += 1
        if decision and decision.decision == "approve" and rec.get("status") == "cache-hit":
            counts["carried-approve"] += 1
    return shown, dict(counts)


def decision_summary(counts: dict[str, int]) -> list[str]:
    """Summary items: "3 approved", ..., "5 waiting for review" (nothing when no row has an output)."""
    names = (("approve", "approved"), ("reject", "rejected"), ("redo", "sent back for redo"),
             ("waiting", "waiting for review"))
    items = [f"{counts[k]} {label}" for k, label in names if counts.get(k)]
    if counts.get("carried-approve"):
        items.append(f"{counts['carried-approve']} carried with an earlier approval")
    return items
