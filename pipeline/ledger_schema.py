"""The ledger's schema (``ledger.jsonl``, version 1; fields: docs/architecture.md).

One place for what a record may be and what its numbers mean; the writer and the reader
(pipeline.ledger), the resume fold (pipeline.resume), the cost fold (pipeline.ledger_cost,
shared by the report and the jobs budget) and the results table all take them from here.

Model seconds (one definition): an attempt's **model seconds** are its device-busy seconds,
the phases that occupy the device: text_encode, context_encode, denoise, decode_latents and
failed_model (a model call that raised, shared over its rows). The other phases (read,
decode, file_encode, commit) run on CPU threads overlapped with the model's next batch and are
CPU work, never model seconds. results.parquet's ``seconds`` (of the successful attempt), the
report's device-busy time and the per-row cost (model seconds x price) all use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 1

RECORD_TYPES = ("run-start", "actor-load", "actor-stop", "attempt", "budget-stop", "run-end",
                "publish",  # publish: kontext-batch publish (pipeline.publish)
                "text-phase")  # the run's instructions encoded before the editors (pipeline.text_phase)
OUTCOMES = ("ok", "cache-hit", "retry-scheduled", "failed-permanent")
FAILED_OUTCOMES = ("retry-scheduled", "failed-permanent")

# A row of the run with no final outcome yet (a retry scheduled when the run stopped, a row the
# budget left undispatched): results.parquet's status and the report's row status alike.
NOT_RUN = "not-run"

# failed_model: device seconds of a model call that raised (OOM, transient, a model-side bad
# row), shared over its rows: the device was busy, so reports cost it as failed attempts
# (ledgers written before it existed lack the key: 0).
PHASES = ("read", "decode", "text_encode", "context_encode", "denoise", "decode_latents",
          "failed_model", "file_encode", "commit")
MODEL_PHASES = ("text_encode", "context_encode", "denoise", "decode_latents", "failed_model")
CPU_PHASES = ("read", "decode", "file_encode", "commit")


def empty_phases() -> dict[str, float]:
    return dict.fromkeys(PHASES, 0.0)


def seconds_value(value: Any) -> float:
    """A time from the ledger; null, missing or not a number counts as 0 (a cache hit has none)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def model_seconds(phases: Mapping[str, Any] | None) -> float:
    """Model (device-busy) seconds of one attempt's phases: see the module's definition."""
    phases = phases or {}
    return sum(seconds_value(phases.get(p)) for p in MODEL_PHASES)


def cpu_seconds(phases: Mapping[str, Any] | None) -> float:
    """CPU-thread seconds of one attempt's phases (read, decode, file encode, commit)."""
    phases = phases or {}
    return sum(seconds_value(phases.get(p)) for p in CPU_PHASES)


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
