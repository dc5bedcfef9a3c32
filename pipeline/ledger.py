"""The run ledger: append-only JSONL, one record per line (schema: docs/architecture.md).

Written only by the driver. Each ``append`` call writes its records, flushes and fsyncs,
so a record that is on disk stays there when the driver is killed. A kill in the middle
of a write can leave a truncated last line: the reader skips it, and a writer that
reopens the file first cuts that fragment off, so the file stays complete lines only.
A run folder that runs out of space (ENOSPC, EDQUOT) mid-write gets the same treatment at
once: the fragment is cut and ``RunFolderFull`` says where and how to resume.
"""

from __future__ import annotations

import errno
import json
import os
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pipeline import killpoints
from pipeline.errors import RunFolderFull

SCHEMA_VERSION = 1

RECORD_TYPES = ("run-start", "actor-load", "actor-stop", "attempt", "budget-stop", "run-end",
                "publish")  # publish: kontext-batch publish (pipeline.publish)
OUTCOMES = ("ok", "cache-hit", "retry-scheduled", "failed-permanent")
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# failed_model: device seconds of a model call that raised (OOM, transient, a model-side bad
# row), shared over its rows: the device was busy, so reports cost it as failed attempts.
PHASES = ("read", "decode", "text_encode", "context_encode", "denoise", "decode_latents",
          "failed_model", "file_encode", "commit")


def empty_phases() -> dict[str, float]:
    return dict.fromkeys(PHASES, 0.0)


class LedgerWriter:
    """Appends records of one run to ``path`` (a local file in the run directory)."""

    def __init__(self, path: str | Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.full: str | None = None  # why the folder took no more records, once it is full
        self._file = open(self.path, "ab")
        self._drop_partial_line()

    def _drop_partial_line(self) -> None:
        """Cut a fragment left by a kill mid-write (it was never durable as a record), so
        the file stays a clean sequence of complete lines."""
        size = self.path.stat().st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            f.seek(max(0, size - (1 << 20)))
            tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        keep = size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= (1 << 20) else size)
        os.truncate(self.path, keep)
        self._sync()

    def _sync(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())

    def record(self, type_: str, **fields: Any) -> dict[str, Any]:
        """A record dict with the common fields filled in (not yet written)."""
        if type_ not in RECORD_TYPES:
            raise ValueError(f"unknown ledger record type {type_!r}")
        rec: dict[str, Any] = {"v": SCHEMA_VERSION, "type": type_, "run_id": self.run_id,
                               "ts": time.time()}
        rec.update(fields)
        return rec

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write ``records`` and make them durable (flush + fsync) before returning."""
        lines = [json.dumps(r, separators=(",", ":"), default=str).encode("utf-8") + b"\n"
                 for r in records]
        if not lines:
            return
        payload = b"".join(lines)
        if killpoints.armed("ledger-mid-write"):  # crash tests: a torn last line
            self._file.write(payload[: max(1, len(payload) // 2)])
            self._sync()
            killpoints.die()
        if self.full is not None:
            raise RunFolderFull(self.full)
        size = self._file.tell()
        try:
            self._write(payload)
        except OSError as exc:
            if exc.errno not in NO_SPACE:
                raise
            self._cut_back(size)
            self.full = run_folder_full_message(self.path.parent, exc)
            raise RunFolderFull(self.full) from None

    def _write(self, payload: bytes) -> None:
        self._file.write(payload)
        self._sync()

    def _cut_back(self, size: int) -> None:
        """Drop what a failed write left (in the buffer and on disk): complete lines only."""
        try:
            self._file.close()
        except OSError:
            pass  # the buffered bytes could not be flushed either; that is the point
        os.truncate(self.path, size)
        self._file = open(self.path, "ab")

    def write(self, type_: str, **fields: Any) -> dict[str, Any]:
        rec = self.record(type_, **fields)
        self.append([rec])
        return rec

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()

    def __enter__(self) -> LedgerWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def run_folder_full_message(folder: str | os.PathLike, exc: OSError) -> str:
    return (f"the run folder {os.fspath(folder)} is out of space ({exc.strerror or exc}); the "
            f"ledger holds every record made so far. Free space there (or move --out); started "
            f"again, the run resumes where it stopped")


def read_ledger(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a ledger, skipping lines that are not complete JSON objects
    (a truncated last line after a kill)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "type" in rec:
                yield expand_attempt(rec) if rec["type"] == "attempt" else rec


TAIL_BLOCK = 1 << 16  # bytes read per step by records_backwards


def records_backwards(path: str | Path, types: Collection[str]) -> Iterator[dict[str, Any]]:
    """The ledger's records whose type is in ``types``, last first, read from the end: finding
    the last run-end or budget-stop of a million-row ledger costs its last block, not a parse
    of every line. Only lines naming one of the types (literally, or through a \\uXXXX escape)
    are parsed; lines that are not complete JSON objects (a torn last line) are skipped, as
    ``read_ledger`` skips them. FileNotFoundError when there is no ledger."""
    needles = [t.encode("utf-8") for t in types] + [b"\\u"]
    with open(path, "rb") as f:
        for line in _lines_backwards(f):
            if not any(needle in line for needle in needles):
                continue
            try:
                rec = json.loads(line.strip())
            except ValueError:
                continue
            if isinstance(rec, dict) and rec.get("type") in types:
                yield rec


def _lines_backwards(f: BinaryIO) -> Iterator[bytes]:
    """The lines of ``f`` (split at b"\\n", as iterating the file does), last first."""
    pos = f.seek(0, os.SEEK_END)
    carry = b""
    while pos > 0:
        step = min(TAIL_BLOCK, pos)
        pos -= step
        f.seek(pos)
        lines = (f.read(step) + carry).split(b"\n")
        carry = lines.pop(0)  # may begin in the block before
        yield from reversed(lines)
    yield carry


# A cache hit ran no actor and timed nothing: these fields are null (phases zero, end = start) by
# definition, so its ledger line leaves them out (a nightly re-run of a million mostly unchanged
# rows writes a million of these) and readers put them back with ``expand_attempt``.
CACHE_HIT_IMPLIED = ("error_class", "error", "actor", "pid", "node", "device", "device_type", "end", "phases")


def compact_cache_hit(rec: dict[str, Any]) -> dict[str, Any]:
    """Drop the implied fields of a cache-hit attempt when they hold their implied values."""
    implied = expand_attempt({"outcome": "cache-hit", "start": rec.get("start")})
    return {k: v for k, v in rec.items() if not (k in CACHE_HIT_IMPLIED and v == implied[k])}


def expand_attempt(rec: dict[str, Any]) -> dict[str, Any]:
    """A read attempt record with every field present (cache hits written compact); in place."""
    if rec.get("outcome") == "cache-hit":
        for field_name in CACHE_HIT_IMPLIED:
            if field_name not in rec:
                rec[field_name] = (empty_phases() if field_name == "phases"
                                   else rec.get("start") if field_name == "end" else None)
    return rec

