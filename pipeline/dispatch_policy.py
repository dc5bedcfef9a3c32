"""The dispatcher's scheduling policy: which batch goes to which actor, and when. No Ray here.

- Batches hold rows of one (steps, guidance, size, LoRA adapter set) group (``Task.group``:
  actors switch adapters between model calls, never inside one), neighbours in plan order
  (the plan sorts a set's rows together), at most the group's cap: ``batch_size`` until CUDA
  ran out of memory on that group, then halved (memory depends on the size: a 1024² group
  that does not fit says nothing of a 512² one).
- Each usable actor holds up to ``in_flight_per_actor`` (>= 2) batches, the least loaded first.
- An isolated batch (a retry after an actor died) runs alone in an actor process: it reserves
  an actor, which gets nothing new and takes the batch once drained, while the others keep
  working (at most half the live actors are reserved at once, and at least one).
- Retries wait an exponential backoff; when due they go ahead of the queue.
- Budget: before each batch the hook is asked; on the first "no" nothing more is handed out.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.records import Task

if TYPE_CHECKING:
    from pipeline.dispatch_pool import ActorSlot


class BudgetHook(Protocol):
    """What the dispatcher asks before each batch (implemented by the jobs layer)."""

    def may_dispatch(self, n_rows: int) -> bool:
        """True when ``n_rows`` more rows may start without exceeding the cap."""
        ...

    def status(self) -> Mapping[str, Any]:
        """``spent``, ``cap`` and ``currency`` for the ``budget-stop`` record."""
        ...


@dataclass
class Batch:
    tasks: list[Task]
    # Retry after an actor died: run with nothing else in that actor process, so that if
    # it dies again the death belongs to this batch's rows alone.
    isolate: bool = False


def make_batches(tasks: Sequence[Task], batch_size: int) -> list[Batch]:
    """Consecutive tasks of one group, at most ``batch_size`` each (tasks come sorted)."""
    batches: list[Batch] = []
    for _, group in itertools.groupby(tasks, key=lambda t: t.group):
        rows = list(group)
        batches += [Batch(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    return batches


class SchedulingPolicy:
    """Queues of batches waiting for an actor, and the rules that hand them out."""

    def __init__(self, *, batch_size: int, in_flight_per_actor: int, backoff_s: float,
                 backoff_max_s: float, budget: BudgetHook | None = None) -> None:
        self.batch_size = batch_size
        self.per_actor = max(2, in_flight_per_actor)
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self.budget = budget
        self.stopped = False  # the budget said no: nothing more is handed out
        self.batch_caps: dict[tuple, int] = {}  # group -> cap after out-of-memory
        self.queue: deque[Batch] = deque()
        self.isolated: deque[Batch] = deque()  # retries that must run alone in an actor
        self.delayed: list[tuple[float, int, Batch]] = []  # (due, seq, batch) heap
        self._seq = itertools.count()

    @property
    def pending(self) -> bool:
        return bool(self.queue or self.isolated or self.delayed)

    def add(self, tasks: Sequence[Task]) -> None:
        self.queue.extend(make_batches(tasks, self.batch_size))

    def cap_for(self, group: tuple) -> int:
        """The batch size a group's batches get now (``batch_size`` until it ran out of
        memory)."""
        return self.batch_caps.get(group, self.batch_size)

    def shrink(self, group: tuple, rows: list[Task], batch_rows: int) -> list[list[Task]]:
        """A batch of ``batch_rows`` rows ran out of memory: halve the group's cap and cut
        the rows to retry into batches of it."""
        cap = max(1, min(self.cap_for(group), batch_rows // 2))
        self.batch_caps[group] = cap
        return [rows[i:i + cap] for i in range(0, len(rows), cap)]

    # -- waiting ----------------------------------------------------------------------------
    def retry_later(self, tasks: list[Task], tries: int, isolate: bool = False) -> None:
        """Queue a retry after the backoff of a row's ``tries``-th failure."""
        delay = min(self.backoff_s * 2 ** (tries - 1), self.backoff_max_s)
        heapq.heappush(self.delayed, (time.time() + delay, next(self._seq),
                                      Batch(tasks, isolate)))

    def next_due(self) -> float | None:
        return self.delayed[0][0] if self.delayed else None

    def release_due(self) -> None:
        now = time.time()
        due = []
        while self.delayed and self.delayed[0][0] <= now:
            due.append(heapq.heappop(self.delayed)[2])
        for batch in reversed(due):  # retries go first
            self.requeue_front(batch)

    def requeue_front(self, batch: Batch) -> None:
        (self.isolated if batch.isolate else self.queue).appendleft(batch)

    def drop_all(self) -> list[Batch]:
        """Everything not handed out yet (the budget stopped the run), queues emptied."""
        batches = list(self.isolated) + list(self.queue) + [entry[2] for entry in self.delayed]
        self.isolated.clear()
        self.queue.clear()
        self.delayed.clear()
        return batches

    # -- handing out ------------------------------------------------------------------------
    def assignments(self, slots: Sequence[ActorSlot]) -> Iterator[tuple[ActorSlot, Batch]]:
        """(actor, batch) pairs to submit now. The caller submits each before asking for the
        next (an actor's ``in_flight`` is read live); stops early when the budget refuses."""
        if self.stopped:
            return
        self._reserve_for_isolated(slots)
        for slot in slots:  # a reserved actor that has drained takes an isolated batch
            if self.isolated and slot.reserved and slot.usable and not slot.in_flight:
                batch = self._take(self.isolated)
                if batch is None:
                    return
                yield slot, batch
        progressed = True
        while self.queue and progressed:
            progressed = False
            open_slots = (s for s in slots if s.usable and not s.reserved)
            for slot in sorted(open_slots, key=lambda s: s.in_flight):
                if not self.queue or slot.in_flight >= self.per_actor:
                    continue
                batch = self._take(self.queue)
                if batch is None:
                    return
                yield slot, batch
                progressed = True

    def _reserve_for_isolated(self, slots: Sequence[ActorSlot]) -> None:
        """Keep one reserved actor per isolated batch waiting, up to half the live actors
        (at least one): they drain while the others keep working."""
        live = [s for s in slots if s.alive and s.ready]
        for slot in slots:
            if slot.reserved and (slot not in live or not self.isolated):
                slot.reserved = False
        if not self.isolated:
            return
        want = min(len(self.isolated), max(1, len(live) // 2))
        held = [s for s in live if s.reserved]
        if len(held) < want:
            free = sorted((s for s in live if not s.reserved), key=lambda s: s.in_flight)
            for slot in free[:want - len(held)]:
                slot.reserved = True
        else:
            # fewer isolated rows wait now: release the busiest reservations
            for slot in sorted(held, key=lambda s: -s.in_flight)[:len(held) - want]:
                if not slot.exclusive:
                    slot.reserved = False

    def _take(self, queue: deque[Batch]) -> Batch | None:
        """The head of ``queue`` cut to its group's cap; None when the budget says no (then
        the policy is stopped for good)."""
        batch = queue.popleft()
        cap = self.cap_for(batch.tasks[0].group)
        if len(batch.tasks) > cap:
            queue.appendleft(Batch(batch.tasks[cap:], batch.isolate))
            batch = Batch(batch.tasks[:cap], batch.isolate)
        if self.budget is not None and not self.budget.may_dispatch(len(batch.tasks)):
            queue.appendleft(batch)
            self.stopped = True
            return None
        return batch
