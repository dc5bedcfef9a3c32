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
import hashlib
import json
import os
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pipeline import killpoints
from pipeline.errors import RunFolderFull
from pipeline.ledger_schema import (  # noqa: F401  (re-exported: the writer's callers use them)
    CACHE_HIT_IMPLIED,
    OUTCOMES,
    PHASES,
    RECORD_TYPES,
    SCHEMA_VERSION,
    compact_cache_hit,
    empty_phases,
    expand_attempt,
)

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class LedgerWriter:
    """Appends records of one run to ``path`` (a local file in the run directory)."""

    def __init__(self, path: str | Path, run_id: str) -> None:
        self.path = Path(path)
        self.run_id = run_id
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.full: str | None = None  # why the folder took no more records, once it is full
        self._listeners: list[Callable[[Mapping[str, Any]], None]] = []
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

    def subscribe(self, listener: Callable[[Mapping[str, Any]], None]) -> None:
        """Hand ``listener`` every record appended from now on, once it is durable, in order
        (as written: compact cache hits stay compact). The jobs budget meters the run this way
        instead of re-reading the file it is appended to."""
        self._listeners.append(listener)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Write ``records`` and make them durable (flush + fsync) before returning."""
        records = list(records)
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
        for listener in self._listeners:
            for rec in records:
                listener(rec)

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


class LedgerError(ValueError):
    """The ledger cannot be read or a record breaks the schema (strict reading)."""


CHUNK_BYTES = 1 << 20  # read size: memory stays bounded whatever the ledger's length


class LedgerStream:
    """The records of one ledger, in file order: the one reader of ``ledger.jsonl``.

    ``strict`` (reports, verify): a bad line with content after it is damage, a LedgerError
    naming the line; so is a record that is not an object, of another schema version or of an
    unknown type. Only a torn last line (a driver killed mid-write) is skipped, with a warning.
    Each record gets "_line" (its line number, for messages). Lenient (resume, review, tests):
    every line that is not a complete JSON object with a ``type`` is skipped, records are as
    written.

    Iterate once; afterwards ``sha256`` (of every byte read), ``count`` (records) and
    ``warnings`` are set. With ``expand_cache_hits=False``, compact cache-hit records stay
    compact (readers that only count them need not rebuild their implied fields)."""

    def __init__(self, path: Path, chunks: Iterator[bytes], *, strict: bool = True,
                 expand_cache_hits: bool = True) -> None:
        self.path = path
        self.strict = strict
        self.expand_cache_hits = expand_cache_hits
        self.sha256 = ""
        self.count = 0
        self.warnings: list[str] = []
        self._chunks = chunks

    @classmethod
    def open(cls, run_dir: str | Path, *, expand_cache_hits: bool = True) -> LedgerStream:
        """RUN_DIR/ledger.jsonl read strictly; LedgerError naming the path when it is missing."""
        return read_ledger(Path(run_dir) / "ledger.jsonl", strict=True,
                           expand_cache_hits=expand_cache_hits)

    def _lines(self) -> Iterator[bytes]:
        """Lines split at b"\\n" (the last one may be empty or partial), hashing every byte."""
        digest = hashlib.sha256()
        tail = b""
        for chunk in self._chunks:
            digest.update(chunk)
            parts = (tail + chunk).split(b"\n") if tail else chunk.split(b"\n")
            tail = parts.pop()
            yield from parts
        yield tail
        self.sha256 = digest.hexdigest()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pending: tuple[int, bytes, ValueError] | None = None
        for index, raw in enumerate(self._lines()):
            if not raw.strip():
                continue
            if pending is not None:  # a bad line with content after it: damage, not a torn end
                raise self._damaged(*pending)
            line_no = index + 1
            try:
                record = json.loads(raw)
            except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
                if self.strict:
                    pending = (line_no, raw, exc)  # allowed only as the last line with content
                continue
            if not self._accepted(record, line_no):
                continue
            if self.expand_cache_hits and record["type"] == "attempt":
                expand_attempt(record)  # cache hits are written without their implied fields
            if self.strict:
                record["_line"] = line_no  # for messages; stripped from anything written out
            self.count += 1
            yield record
        if pending is not None:
            line_no, raw, exc = pending
            self.warnings.append(
                f"{self.path} line {line_no} is incomplete ({len(raw)} bytes, {_msg(exc)}); ignored "
                "(a driver killed mid-write leaves this)"
            )

    def _accepted(self, record: Any, line_no: int) -> bool:
        """Whether a parsed line is a record; strict reading raises for one that breaks the schema."""
        if not self.strict:
            return isinstance(record, dict) and "type" in record
        path = self.path
        if not isinstance(record, dict):
            raise LedgerError(f"{path} line {line_no}: expected a JSON object, got {type(record).__name__}")
        version = record.get("v")
        if version != SCHEMA_VERSION:
            raise LedgerError(
                f"{path} line {line_no}: ledger schema version {version!r} is not supported "
                f"(this report reads v{SCHEMA_VERSION}); use the kontext-batch version that wrote it"
            )
        if record.get("type") not in RECORD_TYPES:
            raise LedgerError(
                f"{path} line {line_no}: unknown record type {record.get('type')!r} "
                f"(expected one of {', '.join(RECORD_TYPES)})"
            )
        return True

    def _damaged(self, line_no: int, raw: bytes, exc: Exception) -> LedgerError:
        return LedgerError(
            f"{self.path} line {line_no} is not valid JSON ({exc}); the ledger is damaged in the "
            "middle, restore it from a copy"
        )


def _msg(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return exc.msg
    return str(getattr(exc, "reason", exc))


def read_ledger(path: str | Path, *, strict: bool = False,
                expand_cache_hits: bool = True) -> LedgerStream:
    """The records of the ledger file ``path`` (see LedgerStream for the two modes). A missing
    file has no records when lenient, and is a LedgerError naming it when strict."""
    path = Path(path)
    if strict:
        try:
            handle = open(path, "rb")  # closed by _read_chunks when iteration ends
        except FileNotFoundError:
            raise LedgerError(f"{path} does not exist; is {path.parent} a run directory "
                              "(OUT/runs/<run_id>)?") from None
        chunks = _read_chunks(handle)
    else:
        chunks = _read_chunks_if_any(path)
    return LedgerStream(path, chunks, strict=strict, expand_cache_hits=expand_cache_hits)


def _read_chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _read_chunks_if_any(path: Path) -> Iterator[bytes]:
    """Opened on the first read (a lenient stream that is never iterated opens nothing)."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    yield from _read_chunks(handle)


def parse_line(line: bytes) -> dict[str, Any] | None:
    """One ledger line read leniently: the record, or None for a line that is not one."""
    if not line.strip():
        return None
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) and "type" in rec else None


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
            rec = parse_line(line)
            if rec is not None and rec.get("type") in types:
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
