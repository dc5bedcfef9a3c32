"""Ledger ``attempt`` record fields for one row (schema: docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipeline.ledger_schema import compact_cache_hit, empty_phases

if TYPE_CHECKING:
    from pipeline.loras import RowLoras


@dataclass(slots=True)
class Task:
    """One manifest row with its cache key: what an actor needs to compute it."""

    row_index: int
    row_id: str
    image: str
    image_sha256: str
    instruction: str  # normalised (what the model sees and the key holds)
    seed: int
    steps: int
    guidance: float
    size: tuple[int, int] | None
    output_format: str
    ext: str
    key: str
    product_id: str | None = None
    variant: str | None = None
    loras: RowLoras | None = None  # LoRA adapter set (pipeline.loras); None: the base model

    @property
    def group(self) -> tuple:
        """Rows with equal group share one model call (one steps/guidance/size, one adapter
        set: actors switch adapters between calls, never inside one)."""
        return (self.steps, self.guidance, self.size, self.loras)


# A row note (ledger attempt ``notes``, results ``notes``): the T5 cut has its own ``truncated`` flag.
CLIP_TRUNCATED_NOTE = "instruction cut at CLIP's token limit: its pooled embedding saw only the start"


def clip_truncation_notes(result: Mapping[str, Any]) -> list[str]:
    """The CLIP-truncation note of an actor's row result (``clip_truncated``), if any."""
    return [CLIP_TRUNCATED_NOTE] if result.get("clip_truncated") else []


def attempt_fields(*, row_id: str | None, row_index: int, key: str | None, attempt: int,
                   outcome: str, image: str | None, instruction: str | None,
                   seed: int | None, product_id: str | None = None,
                   variant: str | None = None, error_class: str | None = None,
                   error: str | None = None, actor: Mapping[str, Any] | None = None,
                   start: float | None = None, end: float | None = None,
                   phases: Mapping[str, float] | None = None, output_uri: str | None = None,
                   nbytes: int | None = None, **extra: Any) -> dict[str, Any]:
    """All fields of an attempt record; actor info may be None (cache hits, plan-time)."""
    all_phases = empty_phases()
    if phases:
        all_phases.update({k: float(v) for k, v in phases.items() if k in all_phases})
    rec = {
        "row_id": row_id, "row_index": row_index, "key": key, "attempt": attempt,
        "outcome": outcome, "error_class": error_class, "error": error,
        "actor": actor.get("actor") if actor else None,
        "pid": actor.get("pid") if actor else None,
        "node": actor.get("node") if actor else None,
        "device": actor.get("device") if actor else None,
        "device_type": actor.get("device_type") if actor else None,
        "start": start, "end": end, "phases": all_phases, "output_uri": output_uri,
        "bytes": nbytes, "product_id": product_id, "variant": variant,
        "instruction": instruction, "seed": seed, "image": image,
    }
    rec.update(extra)
    return compact_cache_hit(rec) if outcome == "cache-hit" else rec


def task_attempt(task: Task, *, attempt: int, outcome: str, **fields: Any) -> dict[str, Any]:
    return attempt_fields(row_id=task.row_id, row_index=task.row_index, key=task.key,
                          attempt=attempt, outcome=outcome, image=task.image,
                          instruction=task.instruction, seed=task.seed,
                          product_id=task.product_id, variant=task.variant, **fields)
