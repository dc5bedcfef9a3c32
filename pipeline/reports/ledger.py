"""Read a run's ledger.jsonl (schema version 1, see docs/architecture.md).

A driver killed mid-write leaves a partial last line: it is skipped with a warning. A bad line
anywhere else means the ledger was damaged and is an error naming the line.

The file is read in bounded chunks and its records are handed out one at a time
(``LedgerStream``), so a million-row ledger is never held whole: the report's figures are
aggregated as the records go by. ``read_ledger`` keeps every record, for callers that want them all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ledger import expand_attempt

LEDGER_VERSION = 1
RECORD_TYPES = ("run-start", "actor-load", "actor-stop", "attempt", "budget-stop", "run-end",
                "publish")  # publish: kontext-batch publish (pipeline.publish)
CHUNK_BYTES = 1 << 20  # read size: memory stays bounded whatever the ledger's length


class LedgerError(ValueError):
    """The ledger cannot be read or a record breaks the schema."""


@dataclass(frozen=True)
class Ledger:
    path: Path
    records: list[dict[str, Any]]
    sha256: str  # digest of the whole file as read (informational: verify compares figures)
    warnings: list[str] = field(default_factory=list)


def _chunks_of(data: bytes) -> Iterator[bytes]:
    yield data


class LedgerStream:
    """The validated records of one ledger, in file order, each with "_line" (its line number).

    Iterate once; afterwards `sha256` (of every byte read), `count` (records) and `warnings` (a
    torn last line) are set. With `expand_cache_hits=False`, compact cache-hit records stay compact
    (readers that only count them need not rebuild their implied fields)."""

    def __init__(self, path: Path, chunks: Iterator[bytes], *, expand_cache_hits: bool = True) -> None:
        self.path = path
        self.expand_cache_hits = expand_cache_hits
        self.sha256 = ""
        self.count = 0
        self.warnings: list[str] = []
        self._chunks = chunks

    @classmethod
    def open(cls, run_dir: str | Path, *, expand_cache_hits: bool = True) -> LedgerStream:
        """RUN_DIR/ledger.jsonl; LedgerError naming the path when it is missing."""
        path = Path(run_dir) / "ledger.jsonl"
        try:
            handle = open(path, "rb")  # closed by _read_file when iteration ends
        except FileNotFoundError:
            raise LedgerError(f"{path} does not exist; is {run_dir} a run directory (OUT/runs/<run_id>)?") from None
        return cls(path, _read_file(handle), expand_cache_hits=expand_cache_hits)

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
        path = self.path
        pending: tuple[int, bytes, json.JSONDecodeError | UnicodeDecodeError] | None = None
        for index, raw in enumerate(self._lines()):
            if not raw.strip():
                continue
            if pending is not None:  # a bad line with content after it: damage, not a torn end
                raise self._damaged(*pending)
            line_no = index + 1
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                pending = (line_no, raw, exc)  # allowed only as the last line with content
                continue
            if not isinstance(record, dict):
                raise LedgerError(f"{path} line {line_no}: expected a JSON object, got {type(record).__name__}")
            version = record.get("v")
            if version != LEDGER_VERSION:
                raise LedgerError(
                    f"{path} line {line_no}: ledger schema version {version!r} is not supported "
                    f"(this report reads v{LEDGER_VERSION}); use the kontext-batch version that wrote it"
                )
            if record.get("type") not in RECORD_TYPES:
                raise LedgerError(
                    f"{path} line {line_no}: unknown record type {record.get('type')!r} "
                    f"(expected one of {', '.join(RECORD_TYPES)})"
                )
            if self.expand_cache_hits and record["type"] == "attempt":
                expand_attempt(record)  # cache hits are written without their implied fields
            record["_line"] = line_no  # for messages; stripped from anything written out
            self.count += 1
            yield record
        if pending is not None:
            line_no, raw, exc = pending
            self.warnings.append(
                f"{path} line {line_no} is incomplete ({len(raw)} bytes, {_msg(exc)}); ignored "
                "(a driver killed mid-write leaves this)"
            )

    def _damaged(self, line_no: int, raw: bytes, exc: Exception) -> LedgerError:
        return LedgerError(
            f"{self.path} line {line_no} is not valid JSON ({exc}); the ledger is damaged in the "
            "middle, restore it from a copy"
        )


def _msg(exc: Exception) -> str:
    return exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc.reason)


def _read_file(handle: Any) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK_BYTES):
            yield chunk


def _collect(stream: LedgerStream) -> Ledger:
    records = list(stream)
    return Ledger(path=stream.path, records=records, sha256=stream.sha256, warnings=stream.warnings)


def parse_ledger(data: bytes, path: Path) -> Ledger:
    """Parse ledger bytes; `path` is only used in messages."""
    return _collect(LedgerStream(path, _chunks_of(data)))


def read_ledger(run_dir: str | Path) -> Ledger:
    """Read RUN_DIR/ledger.jsonl, every record kept (reports use LedgerStream instead)."""
    return _collect(LedgerStream.open(run_dir))
