"""Per-row final state of a run, and the results table written from it.

``results.parquet`` has one row per manifest row (docs/architecture.md): row_id, row_index,
status (done, cache-hit, failed, not-run), output_uri, cache_hit, attempts, error_class,
reason, key, seconds (model seconds of the successful attempt: its device-busy phases, as
pipeline.ledger_schema defines them; file encoding is CPU work and not in it), truncated (the instruction was
cut at the text encoder's token limit; null when not known, e.g. cache hits), notes (what was
done to make the row usable: EXIF rotation, first frame of an animation, flattened
transparency, ...), then the manifest's image, instruction, seed, product_id, variant and
meta_* columns as written in the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.killpoints import kill_point
from pipeline.ledger_schema import NOT_RUN

STATUSES = ("done", "cache-hit", "failed", NOT_RUN)  # the report's row statuses too
CARRIED = ("image", "instruction", "seed", "product_id", "variant")

RESULT_SCHEMA = pa.schema([
    ("row_id", pa.string()), ("row_index", pa.int64()), ("status", pa.string()),
    ("output_uri", pa.string()), ("cache_hit", pa.bool_()), ("attempts", pa.int64()),
    ("error_class", pa.string()), ("reason", pa.string()), ("key", pa.string()),
    ("seconds", pa.float64()), ("truncated", pa.bool_()), ("notes", pa.string()),
])


class Outcomes:
    """Column lists indexed by row_index (compact: 200k rows stay well under 100 MB)."""

    def __init__(self, rows_total: int) -> None:
        n = rows_total
        self.rows_total = n
        self.row_id: list[str | None] = [None] * n
        self.status: list[str] = [NOT_RUN] * n
        self.output_uri: list[str | None] = [None] * n
        self.cache_hit: list[bool] = [False] * n
        self.attempts: list[int] = [0] * n
        self.error_class: list[str | None] = [None] * n
        self.reason: list[str | None] = [None] * n
        self.key: list[str | None] = [None] * n
        self.seconds: list[float | None] = [None] * n
        self.truncated: list[bool | None] = [None] * n
        self.notes: list[str | None] = [None] * n

    def set(self, i: int, *, status: str, row_id: str | None = None, key: str | None = None,
            output_uri: str | None = None, attempts: int | None = None,
            error_class: str | None = None, reason: str | None = None,
            seconds: float | None = None, truncated: bool | None = None,
            notes: str | None = None) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown row status {status!r}")
        self.status[i] = status
        self.cache_hit[i] = status == "cache-hit"
        if row_id is not None:
            self.row_id[i] = row_id
        if key is not None:
            self.key[i] = key
        self.output_uri[i] = output_uri
        if attempts is not None:
            self.attempts[i] = attempts
        self.error_class[i] = error_class
        self.reason[i] = reason
        self.seconds[i] = seconds
        self.truncated[i] = truncated
        self.notes[i] = notes

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for s in self.status:
            out[s] += 1
        return out

    def table(self, manifest_path: str | pa.NativeFile | None) -> pa.Table:
        """``manifest_path``: the manifest, or a reader of the bytes the run read."""
        cols: dict[str, Any] = {
            "row_id": self.row_id, "row_index": list(range(self.rows_total)),
            "status": self.status, "output_uri": self.output_uri, "cache_hit": self.cache_hit,
            "attempts": self.attempts, "error_class": self.error_class, "reason": self.reason,
            "key": self.key, "seconds": self.seconds, "truncated": self.truncated,
            "notes": self.notes,
        }
        table = pa.Table.from_pydict(cols, schema=RESULT_SCHEMA)
        if manifest_path is None:
            return table
        names = pq.read_schema(manifest_path).names
        carried = [c for c in CARRIED if c in names] + [
            c for c in names if c.startswith("meta_") and len(c) > len("meta_")]
        if carried:
            manifest = pq.read_table(manifest_path, columns=carried)
            for name in carried:
                column = manifest.column(name)
                if name in table.column_names:
                    continue
                table = table.append_column(name, column)
        return table

    def write(self, path: str | Path, manifest_path: str | pa.NativeFile | None) -> Path:
        """Write results.parquet atomically (temp file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(self.table(manifest_path), tmp)
        kill_point("results-tmp-written")
        os.replace(tmp, path)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a killed writer
            stale.unlink(missing_ok=True)
        return path
