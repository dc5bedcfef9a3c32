"""Read a run's ledger.jsonl (schema version 1, see docs/architecture.md).

A driver killed mid-write leaves a partial last line: it is skipped with a warning. A bad line
anywhere else means the ledger was damaged and is an error naming the line.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ledger import expand_attempt

LEDGER_VERSION = 1
RECORD_TYPES = ("run-start", "actor-load", "actor-stop", "attempt", "budget-stop", "run-end")


class LedgerError(ValueError):
    """The ledger cannot be read or a record breaks the schema."""


@dataclass(frozen=True)
class Ledger:
    path: Path
    records: list[dict[str, Any]]
    sha256: str  # digest of the whole file as read (informational: verify compares figures)
    warnings: list[str] = field(default_factory=list)


def parse_ledger(data: bytes, path: Path) -> Ledger:
    """Parse ledger bytes; `path` is only used in messages."""
    lines = data.split(b"\n")
    # A complete ledger ends with "\n", so the last split element is empty.
    last_content = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    records: list[dict[str, Any]] = []
    warnings: list[str] = []
    for index, raw in enumerate(lines):
        if not raw.strip():
            continue
        line_no = index + 1
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if index == last_content:
                warnings.append(
                    f"{path} line {line_no} is incomplete ({len(raw)} bytes, {exc.msg}); ignored "
                    "(a driver killed mid-write leaves this)"
                )
                continue
            raise LedgerError(
                f"{path} line {line_no} is not valid JSON ({exc}); the ledger is damaged in the "
                "middle, restore it from a copy"
            ) from None
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
        if record["type"] == "attempt":
            expand_attempt(record)  # cache hits are written without their implied fields
        record["_line"] = line_no  # for messages; stripped from anything written out
        records.append(record)
    return Ledger(path=path, records=records, sha256=hashlib.sha256(data).hexdigest(), warnings=warnings)


def read_ledger(run_dir: str | Path) -> Ledger:
    """Read RUN_DIR/ledger.jsonl."""
    path = Path(run_dir) / "ledger.jsonl"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise LedgerError(f"{path} does not exist; is {run_dir} a run directory (OUT/runs/<run_id>)?") from None
    return parse_ledger(data, path)
