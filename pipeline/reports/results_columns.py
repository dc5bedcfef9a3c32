"""The report step's columns of results.parquet: ``cost`` and ``flags``, and the summary of them.

The runner writes results.parquet before the reports exist (status, output, reason, ``truncated``,
``notes``); the report step then adds what only it knows:

- ``cost`` (float): the row's device-busy cost in the run's currency (per-row cost in
  pipeline.reports.usage; 0 for cache hits and rows no device touched);
- ``flags`` (list of text): the review's flags (unchanged, spread, no-source, failed, ...) for
  the rows it looked at; for a cache hit, the flags the run that made its image gave it (read
  from earlier results.parquet files of the same OUT); null when no review judged the image.

The file is rewritten atomically, and only when a column changes. ``truncated`` and ``notes``
are added as nulls when missing (tables written by older versions), so readers find all four.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.records import CLIP_TRUNCATED_NOTE

RESULTS = "results.parquet"
MAX_EARLIER_RUNS = 30  # earlier run folders searched for a carried image's flags
COLUMN_TYPES = {"cost": pa.float64(), "flags": pa.list_(pa.string()), "truncated": pa.bool_(),
                "notes": pa.string()}


def earlier_flags(run_dir: Path, keys: set[str]) -> dict[str, list[str]]:
    """key -> flags, from the newest earlier results.parquet of the same OUT holding the key."""
    found: dict[str, list[str]] = {}
    runs = run_dir.parent
    try:
        others = [p for p in runs.iterdir() if p != run_dir and (p / RESULTS).is_file()]
    except OSError:
        return found
    others.sort(key=lambda p: (p / RESULTS).stat().st_mtime, reverse=True)
    for other in others[:MAX_EARLIER_RUNS]:
        if len(found) >= len(keys):
            break
        try:
            if "flags" not in pq.read_schema(other / RESULTS).names:
                continue
            table = pq.read_table(other / RESULTS, columns=["key", "flags"])
        except (OSError, ValueError, pa.ArrowException):
            continue
        for key, flags in zip(table.column("key").to_pylist(), table.column("flags").to_pylist(),
                              strict=True):
            if flags is not None and key in keys and key not in found:
                found[key] = flags
    return found


def annotate_results(run_dir: str | Path, costs: Mapping[str, float],
                     flags: Mapping[str, list[str]] | None) -> bool:
    """Add or refresh results.parquet's cost and flags columns (row_id -> value; flags None:
    keep the column as it is); True when the file was rewritten. A run without results.parquet
    (a killed driver) is left alone."""
    path = Path(run_dir) / RESULTS
    if not path.is_file():
        return False
    table = pq.read_table(path)
    row_ids = [str(r) for r in table.column("row_id").to_pylist()]
    statuses = table.column("status").to_pylist() if "status" in table.column_names else [None] * len(row_ids)
    keys = table.column("key").to_pylist() if "key" in table.column_names else [None] * len(row_ids)
    values: dict[str, list[Any]] = {"cost": [round(float(costs.get(r, 0.0)), 9) for r in row_ids]}
    if flags is not None:
        carried = {k for r, s, k in zip(row_ids, statuses, keys, strict=True)
                   if s == "cache-hit" and k and r not in flags}
        from_earlier = earlier_flags(Path(run_dir), carried) if carried else {}
        values["flags"] = [flags.get(r, from_earlier.get(k or ""))
                           for r, k in zip(row_ids, keys, strict=True)]
    changed = False
    for name, kind in COLUMN_TYPES.items():
        column = pa.array(values[name] if name in values else [None] * len(row_ids), kind)
        if name in table.column_names:
            if name not in values or table.column(name).equals(pa.chunked_array([column])):
                continue
            table = table.set_column(table.schema.get_field_index(name), name, column)
        else:
            table = table.append_column(name, column)
        changed = True
    if changed:
        tmp = path.with_name(f".{path.name}.report-{os.getpid()}")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    return changed


def summary_counts(run_dir: str | Path) -> dict[str, Any]:
    """Counts over every row of results.parquet: flags (per flag), T5 and CLIP cuts, rows with
    input notes."""
    path = Path(run_dir) / RESULTS
    wanted = ("flags", "truncated", "notes")
    names = pq.read_schema(path).names
    table = pq.read_table(path, columns=[c for c in wanted if c in names])
    col = {n: table.column(n).to_pylist() if n in table.column_names else [None] * table.num_rows
           for n in wanted}
    flags = Counter(f for fs in col["flags"] if fs for f in fs if f != "failed")
    return {"flags": dict(sorted(flags.items(), key=lambda kv: (-kv[1], kv[0]))),
            "t5_cut": sum(t is True for t in col["truncated"]),
            "clip_cut": sum(CLIP_TRUNCATED_NOTE in (n or "") for n in col["notes"]),
            "noted": sum(bool(n) for n in col["notes"])}


def summary_lines(run_dir: str | Path) -> list[str]:
    """The end-of-run summary's lines on flags, cut instructions and input notes (none: [])."""
    try:
        c = summary_counts(run_dir)
    except (OSError, ValueError, pa.ArrowException):
        return []
    lines = []
    if c["flags"]:
        lines.append("  flags:    " + ", ".join(f"{n} {f}" for f, n in c["flags"].items())
                     + " (review.html; results column flags)")
    cuts = [f"{c[k]} at {name}'s limit" for k, name in (("t5_cut", "T5"), ("clip_cut", "CLIP")) if c[k]]
    if cuts:
        lines.append(f"  cut:      instructions cut {', '.join(cuts)} (results columns truncated, notes)")
    if c["noted"]:
        lines.append(f"  notes:    {c['noted']} row(s) with notes (EXIF rotation, transparency, "
                     "cuts, ...: results column notes)")
    return lines
