"""Run ids, and what an earlier (killed or interrupted) invocation of a run left behind.

The run id is derived from the manifest's content digest and the settings that change
outputs, so the same command finds the same run directory: an unfinished run is resumed
(its ledger appended to), a finished one is followed by ``<id>-2``, ``-3``, ... The rules in
full (what counts against --max-attempts, locked runs, jobs): docs/architecture.md, section 6.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.cache import canonical_json
from pipeline.ledger import read_ledger, records_backwards
from pipeline.ledger_schema import model_seconds

RESUMABLE_END_STATUSES = ("interrupted",)


def base_run_id(manifest_digest: str, settings: Mapping[str, Any]) -> str:
    """Deterministic id: the manifest's content digest plus the output-changing settings."""
    doc = {"manifest": manifest_digest, "settings": dict(settings)}
    return "run-" + hashlib.sha256(canonical_json(doc)).hexdigest()[:16]


@dataclass
class RowHistory:
    key: str | None = None
    final: str | None = None  # "ok" | "cache-hit" | "failed-permanent" | "retry-scheduled"
    attempts: int = 0  # attempts that reached (or tried to reach) a model
    # those made after planning gave the row its key (dispatch: model, read, commit): what
    # counts against --max-attempts when the run resumes. Planning deferrals (an unreadable
    # source, no key yet) never reached a model and do not.
    dispatched: int = 0
    seconds: float | None = None
    output_uri: str | None = None
    error_class: str | None = None
    error: str | None = None
    truncated: bool | None = None  # of the ok attempt (results table columns)
    notes: str | None = None


@dataclass
class RunHistory:
    exists: bool = False
    first_start: float | None = None
    finished_status: str | None = None  # status of the last run-end, None when killed
    invocations: int = 0
    rows: dict[int, RowHistory] = field(default_factory=dict)
    actor_pids: set[tuple[str, int]] = field(default_factory=set)

    @property
    def resumable(self) -> bool:
        return resumable_end(self.exists, self.finished_status)


def resumable_end(exists: bool, finished_status: str | None) -> bool:
    """Whether a run with this ledger state is resumed (rather than given the next id)."""
    return not exists or finished_status in (None, *RESUMABLE_END_STATUSES)


def read_history(ledger_path: Path) -> RunHistory:
    """Summarise a run's ledger, read leniently (a torn last line is skipped)."""
    history = RunHistory()
    if not ledger_path.exists():
        return history
    history.exists = True
    for rec in read_ledger(ledger_path):
        kind = rec.get("type")
        if kind == "run-start":
            history.invocations += 1
            history.finished_status = None
            if history.first_start is None:
                history.first_start = float(rec.get("ts") or 0.0)
        elif kind == "run-end":
            history.finished_status = rec.get("status") or "complete"
        elif kind == "actor-load":
            history.actor_pids.add((str(rec.get("actor")), int(rec.get("pid") or 0)))
        elif kind == "attempt":
            index = rec.get("row_index")
            if index is None:
                continue
            row = history.rows.setdefault(int(index), RowHistory())
            outcome = rec.get("outcome")
            if outcome != "cache-hit":
                row.attempts += 1
                row.dispatched += rec.get("key") is not None
            row.key = rec.get("key")
            row.final = outcome
            if outcome in ("ok", "cache-hit"):
                row.output_uri = rec.get("output_uri")
                row.error_class = row.error = None
                if outcome == "ok":
                    row.seconds = model_seconds(rec.get("phases"))
                    row.truncated, row.notes = rec.get("truncated"), rec.get("notes")
            else:
                row.error_class, row.error = rec.get("error_class"), rec.get("error")
    return history


def ledger_end(ledger_path: Path) -> tuple[bool, str | None]:
    """``(exists, finished_status)`` as ``read_history`` would find them, read from the end.

    Only the last ``run-start`` or ``run-end`` record decides the status, so the ledger is read
    backwards up to it (``records_backwards``): a finished run costs its last block, not a
    parse of every row (run-id choice looks at every earlier finished run of the same
    command)."""
    try:
        for rec in records_backwards(ledger_path, ("run-start", "run-end")):
            if rec["type"] == "run-start":
                return True, None
            return True, rec.get("status") or "complete"
    except FileNotFoundError:
        return False, None
    return True, None


def ledger_resumable(ledger_path: Path) -> bool:
    """``read_history(ledger_path).resumable``, from the ledger's tail (see ``ledger_end``)."""
    return resumable_end(*ledger_end(ledger_path))


def choose_run(runs_dir: Path, base_id: str, explicit: str | None) -> tuple[str, RunHistory]:
    """The run id to use and its history: resume an unfinished run, else the next free id.
    Finished runs are recognised from their ledger's tail; only the chosen one is parsed."""
    if explicit:
        return explicit, read_history(runs_dir / explicit / "ledger.jsonl")
    n = 1
    while True:
        run_id = base_id if n == 1 else f"{base_id}-{n}"
        ledger = runs_dir / run_id / "ledger.jsonl"
        if ledger_resumable(ledger):
            return run_id, read_history(ledger)
        n += 1
