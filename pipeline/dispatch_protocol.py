"""What the driver sends an actor for one batch and what comes back (``EditorActor.edit_batch``).

The dataclasses are the contract; on the wire they are plain dicts (``to_wire`` /
``from_wire``), so an actor needs none of the driver's classes to answer and in-process callers
(tests, tools) can write a batch by hand. A result field this driver does not know (a newer
actor's) is kept in ``RowResult.extra`` rather than dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

TRUNCATED_NOTE = "instruction cut at the text encoder's token limit"


@dataclass(slots=True)
class RowRequest:
    """One row to edit: the source's bytes (read by the driver) and what the model needs."""

    row_index: int
    row_id: str
    key: str  # cache key: the output is stored under it
    instruction: str
    seed: int
    image_bytes: bytes
    image_sha256: str  # the planned digest: the actor refuses bytes that changed since
    output_format: str
    params: dict[str, Any]  # encoding parameters and provenance (pipeline.encode)


@dataclass(slots=True)
class BatchRequest:
    """Rows of one (steps, guidance, size, adapter set) group, edited in one model call."""

    rows: list[RowRequest]
    steps: int | None
    guidance: float | None
    size: tuple[int, int] | None
    max_pixels: int  # larger sources are refused before decoding
    step_cache: float | None  # first-block step caching threshold (None: exact)
    batch_id: int = 0  # marked started in ``marks`` before the model call
    marks: Any = None  # the start-marks tracker's handle (pipeline.dispatch_marks)
    # instruction -> its stored embedding's bytes (pipeline.text_phase); None: the actor encodes
    embeddings: dict[str, bytes] | None = None
    # the rows' LoRA adapter set (pipeline.loras.RowLoras.to_wire: mode, [{path, sha256, scale}]);
    # None: the base model
    loras: dict[str, Any] | None = None

    def to_wire(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"embeddings": self.embeddings} if self.embeddings else {}
        if self.loras:
            extra["loras"] = self.loras
        return {**extra, "max_pixels": self.max_pixels, "step_cache": self.step_cache,
                "steps": self.steps, "guidance": self.guidance,
                "size": list(self.size) if self.size else None,
                "rows": [{f.name: getattr(row, f.name) for f in fields(RowRequest)}
                         for row in self.rows],
                "batch_id": self.batch_id, "marks": self.marks}


@dataclass(slots=True)
class RowResult:
    """One row's outcome on the actor. ``ok``: ``data`` holds the encoded output; else
    ``error_class`` (pipeline.errors) and ``error`` say why, ``oom`` when CUDA ran out of
    memory (the driver retries at a smaller batch)."""

    row_index: int
    key: str
    ok: bool
    start: float  # the batch's start and end on the actor node's clock
    end: float
    phases: dict[str, float]  # phase -> seconds (ledger phase names)
    data: bytes | None = None
    error_class: str | None = None
    error: str | None = None
    oom: bool = False
    truncated: bool = False  # the instruction was cut at the T5 token limit
    clip_truncated: bool = False  # ... at CLIP's
    notes: list[str] = field(default_factory=list)  # decode notes (EXIF orientation, ...)
    size: list[int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_wire(cls, res: Mapping[str, Any]) -> RowResult:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(
            row_index=int(res["row_index"]), key=res["key"], ok=bool(res["ok"]),
            start=res["start"], end=res["end"], phases=dict(res.get("phases") or {}),
            data=res.get("data"), error_class=res.get("error_class"), error=res.get("error"),
            oom=bool(res.get("oom")), truncated=bool(res.get("truncated")),
            clip_truncated=bool(res.get("clip_truncated")), notes=list(res.get("notes") or []),
            size=res.get("size"), extra={k: v for k, v in res.items() if k not in known})

    def row_notes(self) -> str | None:
        """The results table's ``notes`` for an ok row: decode notes, then truncation."""
        return _joined_notes(self.notes, self.truncated)


def row_notes(res: Mapping[str, Any]) -> str | None:
    """``RowResult.row_notes`` of a row result as it comes over the wire."""
    return _joined_notes(res.get("notes") or [], bool(res.get("truncated")))


def _joined_notes(notes: list[str], truncated: bool) -> str | None:
    return "; ".join([*notes, *[TRUNCATED_NOTE] * truncated]) or None


@dataclass(slots=True)
class BatchResult:
    """Who ran the batch (``describe()``'s fields: actor, pid, node, device, ...) and its rows
    in request order."""

    actor: dict[str, Any]
    rows: list[RowResult]

    @classmethod
    def from_wire(cls, result: Mapping[str, Any]) -> BatchResult:
        return cls(actor=dict(result["actor"]),
                   rows=[RowResult.from_wire(r) for r in result["rows"]])

    @property
    def latest_end(self) -> float | None:
        """The last row end stamped by the actor (its node's clock), if any."""
        return max((r.end or 0.0 for r in self.rows), default=None)
