"""Review decisions (approve / reject / redo): facts about outputs, keyed by the output's cache key.

Where the log lives: ``OUT/decisions.jsonl``, beside ``OUT/store`` and ``OUT/runs`` (OUT is the
folder a run's ``--out`` names, or a job spec's ``output``). One log per OUT spans every run and
night written there, so an image approved today stays approved when tomorrow's run gets it as a
cache hit (same key), and a night's review shows earlier decisions on the images it carried.
(The store itself may be remote, s3://...; the log stays local, like the run folders.)

Writing: one JSON object a line, appended and fsync'd by ``pipeline.ledger.LedgerWriter`` (the
same helper the run ledger uses: a line on disk stays there; a kill mid-write leaves at most a
torn last line, which readers skip and the next writer cuts off). Appends from several reviewers
(threads or processes) are serialised with an ``flock`` on ``decisions.jsonl.lock``, so lines
never interleave and a writer never cuts another's line in flight.

Reading: ``DecisionLog.current()`` folds the log, last decision per key wins (file order is
append order under the lock); it reads only the bytes appended since its last call.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.ledger import SCHEMA_VERSION, LedgerWriter

DECISIONS_FILE = "decisions.jsonl"
RECORD_TYPE = "decision"
DECISIONS = ("approve", "reject", "redo")
MAX_NOTE = 2000
MAX_REVIEWER = 100


class DecisionError(ValueError):
    """A decision that cannot be recorded (unknown kind, bad reviewer, ...); says why."""


@dataclass(frozen=True)
class Decision:
    key: str
    decision: str
    reviewer: str
    ts: float
    note: str = ""
    row_id: str | None = None
    run_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "reviewer": self.reviewer, "ts": self.ts,
                "note": self.note, "row_id": self.row_id, "run_id": self.run_id}


def decisions_path(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / DECISIONS_FILE


def default_reviewer() -> str:
    """The OS user (``--reviewer`` overrides it)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def check_reviewer(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_REVIEWER or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise DecisionError(f"reviewer name {name!r} is not usable: give 1-{MAX_REVIEWER} "
                            "printable characters with --reviewer")
    return name


def decision_record(key: str, decision: str, *, reviewer: str, note: str = "",
                    row_id: str | None = None, run_id: str | None = None,
                    ts: float | None = None) -> dict[str, Any]:
    """One log line (not yet written), checked."""
    if decision not in DECISIONS:
        raise DecisionError(f"decision {decision!r} is unknown; use one of {', '.join(DECISIONS)}")
    if not isinstance(note, str) or len(note) > MAX_NOTE:
        raise DecisionError(f"a note must be text of at most {MAX_NOTE} characters")
    if not isinstance(key, str) or not key:
        raise DecisionError("a decision needs the output's cache key")
    return {"v": SCHEMA_VERSION, "type": RECORD_TYPE, "key": key, "decision": decision,
            "reviewer": check_reviewer(reviewer), "note": note, "row_id": row_id,
            "run_id": run_id, "ts": time.time() if ts is None else ts}


def _from_record(rec: Mapping[str, Any]) -> Decision | None:
    if rec.get("type") != RECORD_TYPE or rec.get("decision") not in DECISIONS:
        return None
    key = rec.get("key")
    if not isinstance(key, str) or not key:
        return None
    return Decision(key=key, decision=str(rec["decision"]), reviewer=str(rec.get("reviewer") or ""),
                    ts=float(rec.get("ts") or 0.0), note=str(rec.get("note") or ""),
                    row_id=rec.get("row_id"), run_id=rec.get("run_id"))


class DecisionLog:
    """The decisions log of one OUT folder: append (locked, durable) and fold (incremental)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._offset = 0  # bytes of complete lines already folded
        self._current: dict[str, Decision] = {}
        self._read_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the lock; a killed process's lock dies with it

    def append(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Write ``records`` durably (fsync) before returning; returns how many."""
        records = list(records)
        if not records:
            return 0
        with self._locked(), LedgerWriter(self.path, "review") as writer:
            writer.append(records)  # opening it cut any torn line a killed writer left
        return len(records)

    def current(self) -> dict[str, Decision]:
        """key -> its last decision (a copy), after reading what was appended since last time."""
        with self._read_lock:
            self._read_new()
            return dict(self._current)

    def _read_new(self) -> None:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if size < self._offset:  # replaced or cut below what we read: start over
                    self._offset, self._current = 0, {}
                f.seek(self._offset)
                chunk = f.read(size - self._offset)
        except FileNotFoundError:
            return
        end = chunk.rfind(b"\n") + 1  # a torn last line (a kill mid-write) waits or is cut
        for line in chunk[:end].split(b"\n"):
            self._fold_line(line)
        self._offset += end

    def _fold_line(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            rec = json.loads(line)
        except ValueError:
            return
        decision = _from_record(rec) if isinstance(rec, dict) else None
        if decision is not None:
            self._current[decision.key] = decision


def read_decisions(out_dir: str | os.PathLike) -> dict[str, Decision]:
    """key -> last decision, for the decisions log of OUT ``out_dir`` (empty when none)."""
    return DecisionLog(decisions_path(out_dir)).current()
