"""Which batch an actor had started when it died: start marks kept outside the actor.

An actor holds up to ``in_flight_per_actor`` batches: one runs the model while the next
decodes its sources and waits for the model. When the process dies, Ray fails every batch it
held alike, so the driver alone cannot tell the batch that was running (whose rows may have
killed it) from the one queued behind it (innocent). The actor therefore marks a batch here,
and waits for the mark to be taken, just before the batch's model call; a mark outlives the
actor's process because this tracker is another process (a 0-CPU Ray actor, placed on the
driver's node by Ray's default policy).

Only the latest mark per actor is kept (the model runs one batch at a time per actor), so the
tracker's memory does not grow with the run. A batch marked and then overtaken by a later
mark (it was encoding its outputs when the next one took the model) reads as not started:
the driver sends it again alone, where a second death is its own.
"""

from __future__ import annotations

from typing import Any


class StartMarks:
    """Ray actor: the batch each editor actor started on its model most recently."""

    def __init__(self) -> None:
        self._latest: dict[str, int] = {}

    def mark(self, actor: str, batch_id: int) -> None:
        """Called by ``actor`` (and waited for) before ``batch_id``'s model call."""
        self._latest[actor] = batch_id

    def latest(self, actor: str) -> int | None:
        """The batch ``actor`` started most recently (None: none yet)."""
        return self._latest.get(actor)


def start_marks(ray: Any) -> Any:
    """A StartMarks actor for one dispatch (0 CPU: it never competes with the editors)."""
    return ray.remote(StartMarks).options(num_cpus=0, max_restarts=0).remote()


def had_started(ray: Any, marks: Any, actor: str, batch_id: int, timeout_s: float = 10.0) -> bool:
    """Whether ``actor`` had started ``batch_id`` on its model; True when the tracker cannot
    answer (then the batch is charged, as every lost batch was before marks existed)."""
    if marks is None:
        return True
    try:
        return ray.get(marks.latest.remote(actor), timeout=timeout_s) == batch_id
    except Exception:
        return True
