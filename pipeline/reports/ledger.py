"""A run's ledger as the reports read it: strictly (pipeline.ledger.LedgerStream, strict mode).

A driver killed mid-write leaves a partial last line: it is skipped with a warning. A bad line
anywhere else means the ledger was damaged and is an error naming the line.

Reports iterate a ``LedgerStream`` (bounded chunks, one record at a time), so a million-row
ledger is never held whole; ``load_ledger`` keeps every record, for callers that want them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.ledger import LedgerError, LedgerStream

__all__ = ["Ledger", "LedgerError", "LedgerStream", "load_ledger"]


@dataclass(frozen=True)
class Ledger:
    path: Path
    records: list[dict[str, Any]]
    sha256: str  # digest of the whole file as read (informational: verify compares figures)
    warnings: list[str] = field(default_factory=list)


def _collect(stream: LedgerStream) -> Ledger:
    records = list(stream)
    return Ledger(path=stream.path, records=records, sha256=stream.sha256, warnings=stream.warnings)


def load_ledger(run_dir: str | Path) -> Ledger:
    """RUN_DIR/ledger.jsonl read strictly, every record kept (reports use LedgerStream instead)."""
    return _collect(LedgerStream.open(run_dir))
