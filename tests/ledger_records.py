"""Ledger records written by hand for tests, one builder per record type (pipeline.ledger_schema's
names), and the files they go in.

Tests that check what is derived from a ledger (report figures, the budget meter, resume, the
end-of-run summary) build the ledger a run would have written from these instead of spelling out
each record's fields. A builder fills the fields the writer always writes with plausible values;
a test passes only what it is about. ``run_id=None`` / ``ts=None`` leave those fields out (old or
partial ledgers some readers must accept).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pipeline.ledger_schema import SCHEMA_VERSION, empty_phases

RUN_ID = "r1"
DEVICE_TYPE = "H100"
Record = dict[str, Any]


def phases(**seconds: float) -> dict[str, float]:
    """An attempt's phases: every phase of the schema at 0 s except those given."""
    unknown = set(seconds) - set(empty_phases())
    if unknown:
        raise ValueError(f"not ledger phases: {sorted(unknown)}")
    return empty_phases() | seconds


def record(kind: str, ts: float | None, *, run_id: str | None = RUN_ID, **fields: Any) -> Record:
    """Any record: the common fields (v, type, run_id, ts) as LedgerWriter.record fills them.
    ``kind`` need not be one of the schema's RECORD_TYPES: readers are tested on unknown ones."""
    rec: Record = {"v": SCHEMA_VERSION, "type": kind}
    if run_id is not None:
        rec["run_id"] = run_id
    if ts is not None:
        rec["ts"] = ts
    return rec | fields


def run_start(ts: float | None, rows_total: int | None = None, **fields: Any) -> Record:
    """An invocation's start; with ``rows_total`` also the manifest/model fields a run writes."""
    if rows_total is not None:
        fields = {"manifest": "m.parquet", "rows_total": rows_total, "model": "kd",
                  "fingerprint": "f", "settings": {}} | fields
    return record("run-start", ts, **fields)


def actor_load(ts: float | None, actor: str, start: float, end: float, *, pid: int | None = 1,
               node: str | None = "n1", device: str | None = "cuda:0",
               device_type: str = DEVICE_TYPE, **fields: Any) -> Record:
    """An actor's model load from ``start`` to ``end`` (its holding starts at ``start``)."""
    who = {k: v for k, v in (("pid", pid), ("node", node), ("device", device)) if v is not None}
    return record("actor-load", ts, actor=actor, **who, device_type=device_type, start=start, end=end,
                  **fields)


def actor_stop(ts: float | None, actor: str, end: float, *, pid: int | None = 1,
               node: str | None = "n1", **fields: Any) -> Record:
    """An actor released at ``end`` (its holding ends there)."""
    who = {k: v for k, v in (("pid", pid), ("node", node)) if v is not None}
    return record("actor-stop", ts, actor=actor, **who, end=end, **fields)


def attempt(ts: float | None, row: int, outcome: str, actor: str | None = None,
            start: float | None = None, end: float | None = None,
            work: Mapping[str, float] | None = None, *, attempt_no: int = 1,
            error_class: str | None = None, pid: int = 1, device_type: str = DEVICE_TYPE,
            **fields: Any) -> Record:
    """Row ``row``'s attempt (row_id r<row>, key k<row>); ``actor`` None: no actor ran it (a cache
    hit, a row planning refused). ``work``: its phases (see :func:`phases`). An outcome outside
    the schema's is allowed: readers must cope with it."""
    worked = actor is not None
    done = outcome in ("ok", "cache-hit")
    return record("attempt", ts, row_id=f"r{row}", row_index=row, key=f"k{row}", attempt=attempt_no,
                  outcome=outcome, error_class=error_class, error="boom" if error_class else None,
                  actor=actor, pid=pid if worked else None, node="n1" if worked else None,
                  device="cuda:0" if worked else None, device_type=device_type if worked else None,
                  start=start, end=end, phases=dict(work) if work is not None else phases(),
                  output_uri=f"s/{row}.png" if done else None, bytes=None, product_id=None,
                  variant=None, instruction="x", seed=1, image="a.png", **fields)


def cache_hit(ts: float, row: int, **fields: Any) -> Record:
    """A cache hit served at ``ts`` (no actor, no time)."""
    return attempt(ts, row, "cache-hit", start=ts, end=ts, **fields)


def bad_row(ts: float, row: int, *, attempt_no: int = 1, **fields: Any) -> Record:
    """A row planning refused (failed for good before any actor)."""
    return attempt(ts, row, "failed-permanent", start=ts, end=ts, attempt_no=attempt_no,
                   error_class="bad-row", **fields)


def budget_stop(ts: float | None, spent: float, cap: float, *, currency: str = "USD",
                rows_not_dispatched: int = 0, **fields: Any) -> Record:
    return record("budget-stop", ts, spent=spent, cap=cap, currency=currency,
                  rows_not_dispatched=rows_not_dispatched, **fields)


def run_end(ts: float | None, status: str, **fields: Any) -> Record:
    """An invocation's end (complete, failed-rows, interrupted, budget-stopped)."""
    return record("run-end", ts, status=status, **fields)


def ledger_text(records: Iterable[Mapping[str, Any]]) -> str:
    """The ledger file's text: one JSON object a line."""
    return "".join(json.dumps(r) + "\n" for r in records)


def write_ledger(path: Path, records: Iterable[Mapping[str, Any]], *, append: bool = False) -> Path:
    """Write (or append) ``records`` as ledger lines to ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        f.write(ledger_text(records))
    return path


def write_run(run_dir: Path, records: Iterable[Mapping[str, Any]],
              pricing: Mapping[str, Any] | None = None) -> Path:
    """A run folder the reports read: ledger.jsonl, and config.json with ``pricing`` frozen."""
    write_ledger(run_dir / "ledger.jsonl", records)
    if pricing is not None:
        (run_dir / "config.json").write_text(json.dumps({"pricing": dict(pricing)}))
    return run_dir
