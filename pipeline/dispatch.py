"""The driver's dispatch loop: batches to actors, results to the store and the ledger.

- Batches hold rows of one (steps, guidance, size) group, neighbours in plan order (same
  source image / instruction), at most ``batch_size`` rows. CUDA out-of-memory halves the cap
  of that group only (memory depends on the size: a 1024² group that does not fit at 4 says
  nothing about a 512² one).
- The driver reads a batch's sources concurrently (a few threads, one pyarrow filesystem per
  bucket), so remote manifests do not pay one round trip per row in series.
- Each actor has up to ``in_flight_per_actor`` (>= 2) batches queued, so it never waits for
  the driver: while it denoises one batch the next is already there, and the driver reads
  sources and commits outputs in the meantime.
- Results: an ``ok`` row is committed to the store first, then its ``ok`` attempt record is
  appended to the ledger (one fsync per batch). Failures are classified (pipeline.errors):
  bad rows fail at once; transient and poisoned-device failures are retried with
  exponential backoff up to ``max_attempts`` tries of the run (a resumed run counts the
  earlier invocations' tries too, so it ends as an uninterrupted run would), OOM rows in
  halved batches, and rows of a dead actor one by one, each alone in its actor process (so a
  row that kills its actor ends up failing alone and takes no neighbour with it). An
  isolated row reserves an actor: that actor gets no new batches, and takes the row once the
  ones it holds are done, while the other actors keep working (at most half the actors are
  reserved at once, and at least one). Rows waiting on a row's key
  (followers) end with it: a ``cache-hit`` record each when it commits, a ``failed-permanent``
  one (no actor, zero phases) when it fails.
- An actor that dies mid-batch (``os._exit``, lost node) raises ``RayActorError`` here;
  Ray restarts it (``max_restarts=-1``) and the rows go to whichever actor is free first.
  Only a batch that had started its model call (the actor marks it first, in a tracker that
  outlives it: pipeline.dispatch_marks) or ran alone is charged an attempt; a batch that was
  queued behind it is sent again, alone and uncharged, so that a second death is its own.
- A store that is out of space (ENOSPC, EDQUOT) stops the run (``StoreFull``): every later
  output would fail the same way. Nothing half-written is left under a final name, and the
  run resumes where it stopped once there is space.
- Commits keep an intact output another run committed first (``Store.commit_once``); the
  ``ok`` record then says ``already_stored: true``.
- Budget (optional, jobs layer): before each batch the dispatcher asks
  ``budget.may_dispatch(n_rows)``. On the first "no" it dispatches nothing more, lets the
  batches in flight finish (and commit), marks every undispatched row ``not-run`` with the
  reason "budget cap reached" and writes a ``budget-stop`` ledger record.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import re
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.digests import RemoteFilesystems, read_source_bytes
from pipeline.dispatch_marks import had_started, start_marks
from pipeline.errors import (
    POISONED_DEVICE,
    TRANSIENT,
    PipelineError,
    describe,
)
from pipeline.image_io import DEFAULT_MAX_PIXELS
from pipeline.killpoints import kill_point
from pipeline.ledger import LedgerWriter
from pipeline.outcomes import Outcomes
from pipeline.progress import RunProgress
from pipeline.records import Task, task_attempt
from pipeline.store import Store

_MODEL_PHASES = ("text_encode", "context_encode", "denoise", "decode_latents", "file_encode")
_COMMIT_TRIES = 3
_READ_THREADS = 8  # concurrent source reads per batch (remote stores: round trips overlap)


BUDGET_REASON = "budget cap reached"


class BudgetHook(Protocol):
    """What the dispatcher asks before each batch (implemented by the jobs layer)."""

    def may_dispatch(self, n_rows: int) -> bool:
        """True when ``n_rows`` more rows may start without exceeding the cap."""
        ...

    def status(self) -> Mapping[str, Any]:
        """``spent``, ``cap`` and ``currency`` for the ``budget-stop`` record."""
        ...


class RunAborted(Exception):
    """No actor can run the model (every one failed to load it); the message says why."""


class StoreFull(Exception):
    """The output store has no space left: the run stops (resumable); the message says so."""

    def __init__(self, message: str, records: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.records = records  # ledger records of the batch, to append before stopping


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
TRUNCATED_NOTE = "instruction cut at the text encoder's token limit"


def row_notes(res: Mapping[str, Any], repaired: str | None = None) -> str | None:
    """The results table's ``notes`` for an ok row: a cache repair (Store.repairs), decode
    notes, then truncation."""
    notes = ([repaired] if repaired else []) + list(res.get("notes") or [])
    if res.get("truncated"):
        notes.append(TRUNCATED_NOTE)
    return "; ".join(notes) or None


@dataclass
class ActorSlot:
    name: str
    handle: Any
    in_flight: int = 0
    alive: bool = True  # False: can never come back (model failed to load, gave up waiting)
    # Batches go only to an actor that answered a probe since it (re)started, so its
    # actor-load record always precedes its attempts and a restarting actor gets nothing.
    ready: bool = False
    waiting_since: float = field(default_factory=time.time)
    probe_at: float | None = None  # when to ask a restarting actor again whether it is up
    node: str | None = None
    death: str | None = None
    exclusive: bool = False  # running an isolated batch: nothing else may share the process
    reserved: bool = False  # draining for an isolated batch: gets no other batches
    info: dict[str, Any] = field(default_factory=dict)  # last describe(): actor, pid, node...

    @property
    def usable(self) -> bool:
        return self.alive and self.ready and not self.exclusive


@dataclass
class Batch:
    tasks: list[Task]
    # Retry after an actor died: run with nothing else in that actor process, so that if
    # it dies again the death belongs to this batch's row alone.
    isolate: bool = False


@dataclass
class _Flight:
    slot: ActorSlot
    tasks: dict[int, Task]
    read: dict[int, float]
    submitted: float
    isolate: bool = False
    batch_id: int = 0


@dataclass
class DispatchSettings:
    batch_size: int = 4
    in_flight_per_actor: int = 2
    max_attempts: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    restart_timeout_s: float = 1800.0  # an actor not up (load/restart) this long is given up
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger sources are refused before decoding
    step_cache: float | None = None  # first-block step caching threshold (None: exact)


@dataclass
class _Counters:
    tries: dict[int, int] = field(default_factory=dict)  # row -> attempts this invocation


def make_batches(tasks: Sequence[Task], batch_size: int) -> list[Batch]:
    """Consecutive tasks of one group, at most ``batch_size`` each (tasks come sorted)."""
    batches: list[Batch] = []
    for _, group in itertools.groupby(tasks, key=lambda t: t.group):
        rows = list(group)
        batches += [Batch(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]
    return batches


class Dispatcher:
    """Runs planned tasks on actor slots until every row is done or failed."""

    def __init__(self, *, slots: list[ActorSlot], store: Store, ledger: LedgerWriter,
                 outcomes: Outcomes, progress: RunProgress, settings: DispatchSettings,
                 prior_attempts: Mapping[int, int], followers: Mapping[str, list[Task]],
                 params_for: Callable[[Task], dict[str, Any]],
                 sidecar_for: Callable[[Task, dict[str, Any], bytes, dict[str, Any]],
                                       dict[str, Any]],
                 node_alive: Callable[[str | None], bool] | None = None,
                 budget: BudgetHook | None = None,
                 spent_attempts: Mapping[int, int] | None = None) -> None:
        import ray  # the driver side only: planning and tests of it do not need Ray

        self._ray = ray
        self.slots = slots
        self.store = store
        self.ledger = ledger
        self.outcomes = outcomes
        self.progress = progress
        self.settings = settings
        self.prior = prior_attempts  # attempt numbering continues the ledger's
        # tries earlier invocations of this run spent on each row: they count against
        # max_attempts (default: every prior attempt)
        self.spent = prior_attempts if spent_attempts is None else spent_attempts
        self.followers = followers
        self.params_for = params_for
        self.sidecar_for = sidecar_for
        self.node_alive = node_alive or (lambda node: True)
        self.batch_caps: dict[tuple, int] = {}  # group -> cap after out-of-memory
        self.queue: deque[Batch] = deque()
        self.isolated: deque[Batch] = deque()  # retries that must run alone in an actor
        self.delayed: list[tuple[float, int, Batch]] = []
        self.in_flight: dict[Any, _Flight] = {}
        self.describing: dict[Any, ActorSlot] = {}
        self.counters = _Counters()
        self.seen_instances: set[tuple[str, int]] = set()
        self._seq = itertools.count()
        self.budget = budget
        self.budget_stopped = False
        self.rows_not_dispatched = 0
        self.filesystems = RemoteFilesystems()
        self.clock_ahead: dict[str, float] = {}  # node -> driver clock minus that node's
        self._reader: ThreadPoolExecutor | None = None
        self.marks: Any = None  # the start-marks tracker (pipeline.dispatch_marks), from run()
        self._batch_ids = itertools.count(1)

    # -- public -------------------------------------------------------------------------
    def run(self, tasks: Sequence[Task]) -> None:
        for slot in self.slots:
            self.describing[slot.handle.describe.remote()] = slot
        self.queue.extend(make_batches(tasks, self.settings.batch_size))
        self.marks = start_marks(self._ray)
        self._reader = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="source-read")
        try:
            self._loop()
        finally:
            self._reader.shutdown(wait=True)

    def _loop(self) -> None:
        while self.queue or self.isolated or self.delayed or self.in_flight:
            self._release_due()
            self._probe_restarting()
            self._fill()
            waiting = list(self.in_flight) + list(self.describing)
            if not any(s.alive for s in self.slots):
                raise RunAborted(self._no_actor_reason())
            if not waiting:
                time.sleep(self._idle_pause())
                continue
            ready, _ = self._ray.wait(waiting, num_returns=1, timeout=self._idle_pause())
            if ready:
                more, _ = self._ray.wait(waiting, num_returns=len(waiting), timeout=0)
                for ref in dict.fromkeys([*ready, *more]):
                    if ref in self.describing:
                        self._described(ref)
                    elif ref in self.in_flight:
                        self._complete(ref)

    def _idle_pause(self) -> float:
        """Until the next delayed retry or restart probe is due (at most 0.5 s)."""
        now = time.time()
        due = [t for t in [self.delayed[0][0] if self.delayed else None,
                           *(s.probe_at for s in self.slots if s.probe_at is not None)]
               if t is not None]
        return max(0.01, min([0.5, *(t - now for t in due)]))

    def stop_actors(self, timeout_s: float = 30.0) -> None:
        """Ask live actors for their stop time (actor-stop records), then end them."""
        ray = self._ray
        refs = {slot.handle.stop.remote(): slot for slot in self.slots if slot.alive}
        records = []
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
            for ref in ready:
                try:
                    info = ray.get(ref)
                except Exception:
                    continue
                # An actor still loading when the work ran out never answered its probe:
                # its load record comes now, so the report bills the device time it held.
                records += self._load_records(info)
                records.append(self.ledger.record(
                    "actor-stop", actor=info["actor"], pid=info.get("pid"),
                    node=info.get("node"), end=info["end"]))
        self.ledger.append(records)
        for handle in [slot.handle for slot in self.slots] + [self.marks] * (self.marks is not None):
            try:
                ray.kill(handle, no_restart=True)
            except Exception:
                pass

    # -- actors ---------------------------------------------------------------------------
    def _described(self, ref: Any) -> None:
        """A readiness probe returned: the actor is up (again), or still restarting."""
        slot = self.describing.pop(ref)
        try:
            info = self._ray.get(ref)
        except Exception as exc:
            if not self._actor_failed(slot, exc):
                self._pause(slot, probe_in=0.5)
            return
        slot.ready, slot.probe_at = True, None
        self._note_actor(info, slot)
        # A probe sent at start is answered as soon as the model has loaded.
        self._learn_clock(slot.node, info.get("load_end"))

    def _pause(self, slot: ActorSlot, probe_in: float = 0.0) -> None:
        """Stop sending batches to a restarting actor; probe it until it answers."""
        now = time.time()
        if slot.ready:
            slot.ready, slot.waiting_since = False, now
        if slot not in self.describing.values():
            slot.probe_at = now + probe_in

    def _probe_restarting(self) -> None:
        now = time.time()
        for slot in self.slots:
            if not slot.alive or slot.ready:
                continue
            if now - slot.waiting_since > self.settings.restart_timeout_s:
                slot.alive = False
                slot.death = (f"{slot.name} was not up within "
                              f"{self.settings.restart_timeout_s:.0f} s (model load or restart)")
            elif slot.probe_at is not None and slot.probe_at <= now:
                slot.probe_at = None
                self.describing[slot.handle.describe.remote()] = slot

    def _note_actor(self, info: Mapping[str, Any], slot: ActorSlot) -> None:
        slot.node = info.get("node")
        slot.info = dict(info)
        self.ledger.append(self._load_records(info))

    def _load_records(self, info: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The actor-load record of an actor process not seen before (else none)."""
        instance = (str(info["actor"]), int(info.get("pid") or 0))
        if instance in self.seen_instances:
            return []
        self.seen_instances.add(instance)
        return [self.ledger.record(
            "actor-load", actor=info["actor"], pid=info.get("pid"), node=info.get("node"),
            node_ip=info.get("node_ip"), device=info.get("device"),
            device_type=info.get("device_type"), start=info.get("load_start"),
            end=info.get("load_end"))]

    def _actor_failed(self, slot: ActorSlot, exc: BaseException) -> bool:
        """Marks a slot dead when its actor can never come back; True if so."""
        text = str(exc)
        if "creation task" in text or "max_restarts" in text or \
                type(exc).__name__ == "ActorUnschedulableError":
            slot.alive = False
            slot.death = _first_lines(text)
            return True
        return False

    def _no_actor_reason(self) -> str:
        reasons = sorted({s.death for s in self.slots if s.death})
        return ("no actor could load the model: " + (" | ".join(reasons) or "unknown")
                + "\nFix: check --model, --device and that every node can read the weights")

    # -- dispatch -------------------------------------------------------------------------
    def _release_due(self) -> None:
        now = time.time()
        due = []
        while self.delayed and self.delayed[0][0] <= now:
            due.append(heapq.heappop(self.delayed)[2])
        for batch in reversed(due):  # retries go first
            self._requeue_front(batch)

    def _requeue_front(self, batch: Batch) -> None:
        (self.isolated if batch.isolate else self.queue).appendleft(batch)

    def cap_for(self, group: tuple) -> int:
        """The batch size a group's batches get now (``batch_size`` until it ran out of
        memory)."""
        return self.batch_caps.get(group, self.settings.batch_size)

    def _fill(self) -> None:
        if self.budget_stopped:
            self._drop_for_budget()  # retries scheduled after the stop are not run either
            return
        self._reserve_for_isolated()
        for slot in self.slots:  # a reserved actor that has drained takes an isolated row
            if self.isolated and slot.reserved and slot.usable and not slot.in_flight:
                if not self._take(slot, self.isolated):
                    return
        per_actor = max(2, self.settings.in_flight_per_actor)
        progressed = True
        while self.queue and progressed:
            progressed = False
            open_slots = (s for s in self.slots if s.usable and not s.reserved)
            for slot in sorted(open_slots, key=lambda s: s.in_flight):
                if not self.queue or slot.in_flight >= per_actor:
                    continue
                if not self._take(slot, self.queue):
                    return
                progressed = True

    def _reserve_for_isolated(self) -> None:
        """Keep one reserved actor per isolated batch waiting, up to half the live actors
        (at least one): they drain while the others keep working."""
        live = [s for s in self.slots if s.alive and s.ready]
        for slot in self.slots:
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

    def _take(self, slot: ActorSlot, queue: deque[Batch]) -> bool:
        """Submit the head of ``queue`` (cut to its group's cap) to ``slot``; False when the
        budget says no (then nothing more is dispatched)."""
        batch = queue.popleft()
        cap = self.cap_for(batch.tasks[0].group)
        if len(batch.tasks) > cap:
            queue.appendleft(Batch(batch.tasks[cap:], batch.isolate))
            batch = Batch(batch.tasks[:cap], batch.isolate)
        if self.budget is not None and not self.budget.may_dispatch(len(batch.tasks)):
            queue.appendleft(batch)
            self.budget_stopped = True
            self._drop_for_budget()
            return False
        self._submit(slot, batch)
        return True

    def _drop_for_budget(self) -> None:
        """Mark every queued or delayed row not-run and record the stop (cumulative count)."""
        batches = list(self.isolated) + list(self.queue) + [entry[2] for entry in self.delayed]
        self.isolated.clear()
        self.queue.clear()
        self.delayed.clear()
        dropped = 0
        for batch in batches:
            for task in batch.tasks:
                for row in [task, *self.followers.get(task.key, [])]:
                    self.outcomes.set(row.row_index, status="not-run", key=row.key,
                                      error_class="budget", reason=BUDGET_REASON)
                    dropped += 1
        if not dropped:
            return
        self.rows_not_dispatched += dropped
        status = dict(self.budget.status()) if self.budget is not None else {}
        self.ledger.write("budget-stop", spent=status.get("spent"), cap=status.get("cap"),
                          currency=status.get("currency"),
                          rows_not_dispatched=self.rows_not_dispatched)

    def _submit(self, slot: ActorSlot, batch: Batch) -> None:
        rows, tasks, read = [], {}, {}
        failed_records = []
        sources = self._read_sources(batch.tasks)
        for task, (data, seconds) in zip(batch.tasks, sources, strict=True):
            if isinstance(data, PipelineError):
                now = time.time()
                failed_records += self._failure(task, data.error_class, str(data), None, now,
                                                now, {"read": seconds})
                continue
            read[task.row_index] = seconds
            tasks[task.row_index] = task
            rows.append({"row_index": task.row_index, "row_id": task.row_id, "key": task.key,
                         "instruction": task.instruction, "seed": task.seed,
                         "image_bytes": data, "image_sha256": task.image_sha256,
                         "output_format": task.output_format,
                         "params": self.params_for(task)})
        self.ledger.append(failed_records)
        if not rows:
            return
        first = batch.tasks[0]
        batch_id = next(self._batch_ids)
        payload = {"max_pixels": self.settings.max_pixels, "step_cache": self.settings.step_cache,
                   "steps": first.steps, "guidance": first.guidance,
                   "size": list(first.size) if first.size else None, "rows": rows,
                   "batch_id": batch_id, "marks": self.marks}
        ref = slot.handle.edit_batch.remote(payload)
        kill_point("after-submit")
        slot.in_flight += 1
        slot.exclusive = batch.isolate
        self.in_flight[ref] = _Flight(slot, tasks, read, time.time(), batch.isolate, batch_id)

    def _read_sources(self, tasks: Sequence[Task]
                      ) -> list[tuple[bytes | PipelineError, float]]:
        """Each task's source bytes (or the PipelineError saying why not) and the seconds
        its read took, read concurrently."""
        def read(task: Task) -> tuple[bytes | PipelineError, float]:
            t0 = time.perf_counter()
            try:
                data: bytes | PipelineError = read_source_bytes(task.image, self.filesystems)
            except PipelineError as exc:
                data = exc
            return data, time.perf_counter() - t0

        if self._reader is None or len(tasks) < 2:
            return [read(task) for task in tasks]
        return list(self._reader.map(read, tasks))

    # -- results --------------------------------------------------------------------------
    def _complete(self, ref: Any) -> None:
        flight = self.in_flight.pop(ref)
        flight.slot.in_flight -= 1
        if flight.isolate:
            flight.slot.exclusive = False
        ray = self._ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayActorError as exc:
            self._batch_lost(flight, exc)
            return
        except Exception as exc:  # the task itself failed (object lost, ...): transient
            self._batch_failed(flight, TRANSIENT, describe(exc))
            return
        kill_point("result-received")
        info = result["actor"]
        self._note_actor(info, flight.slot)
        self._learn_clock(flight.slot.node, max((r.get("end") or 0.0 for r in result["rows"]),
                                                default=None))
        records: list[dict[str, Any]] = []
        oom_rows: list[Task] = []
        try:
            for res in result["rows"]:
                task = flight.tasks[res["row_index"]]
                phases = {**res["phases"], "read": flight.read.get(task.row_index, 0.0)}
                if res["ok"]:
                    records += self._commit(task, res, info, phases)
                elif res.get("oom"):
                    records += self._failure(task, TRANSIENT, res["error"], info, res["start"],
                                             res["end"], phases, retry_later=False)
                    if self._may_retry(task, TRANSIENT):
                        oom_rows.append(task)
                else:
                    records += self._failure(task, res["error_class"], res["error"], info,
                                             res["start"], res["end"], phases)
        except StoreFull as full:
            self.ledger.append(records + full.records)  # what did commit stays recorded
            raise
        self.ledger.append(records)
        if any(r.get("outcome") == "ok" for r in records):
            kill_point("after-ledger-append")
        if oom_rows:
            group = oom_rows[0].group
            cap = max(1, min(self.cap_for(group), len(result["rows"]) // 2))
            self.batch_caps[group] = cap
            for i in range(0, len(oom_rows), cap):
                self._schedule(oom_rows[i:i + cap], oom_rows[0])

    def _batch_lost(self, flight: _Flight, exc: BaseException) -> None:
        slot = flight.slot
        if self._actor_failed(slot, exc):
            # The model never loaded there: not the rows' fault, requeue without an attempt.
            self._requeue_front(Batch(list(flight.tasks.values()), flight.isolate))
            return
        self._pause(slot)  # Ray restarts it; no new batches until it answers a probe
        if not flight.isolate and not had_started(self._ray, self.marks, slot.name,
                                                  flight.batch_id):
            # Queued behind the batch that died: not its fault, no attempt spent. Alone next
            # time, so that if it does kill an actor (before its model call) it is charged.
            self._requeue_front(Batch(list(flight.tasks.values()), isolate=True))
            return
        node_lost = slot.node is not None and not self.node_alive(slot.node)
        error_class = TRANSIENT if node_lost else POISONED_DEVICE
        what = "its node was lost" if node_lost else "the actor process died"
        self._batch_failed(flight, error_class, f"{what} mid-batch ({type(exc).__name__})",
                           isolate=True, retry_note="; retried elsewhere")

    def _learn_clock(self, node: str | None, actor_time: float | None) -> None:
        """How far the driver's clock is ahead of ``node``'s: an answer stamped ``actor_time``
        there arrived now, so the smallest difference seen is the offset plus the least
        latency."""
        if node is None or not actor_time:
            return
        seen = time.time() - float(actor_time)
        self.clock_ahead[node] = min(seen, self.clock_ahead.get(node, seen))

    def _batch_failed(self, flight: _Flight, error_class: str, message: str,
                      isolate: bool = False, retry_note: str = "") -> None:
        # Only the driver saw this batch go (no result came back): its times are the driver's,
        # put on the actor node's clock, as every other time of that actor is (the report
        # closes the actor's holding with them).
        shift = self.clock_ahead.get(flight.slot.node or "", 0.0)
        now = time.time() - shift
        records = []
        for task in flight.tasks.values():
            # the note ("retried elsewhere") only where a try is left: no false promise
            retries = self._may_retry(task, error_class, next_try=True)
            records += self._failure(task, error_class, message + retry_note * retries,
                                     flight.slot.info or None,
                                     flight.submitted - shift, now,
                                     {"read": flight.read.get(task.row_index, 0.0)},
                                     isolate=isolate)
        self.ledger.append(records)

    def _commit(self, task: Task, res: Mapping[str, Any], info: Mapping[str, Any],
                phases: dict[str, float]) -> list[dict[str, Any]]:
        attempt = self._next_attempt(task)
        t0 = time.perf_counter()
        data: bytes = res["data"]
        params = self.params_for(task)
        origin = {"run_id": self.ledger.run_id, "row_index": task.row_index,
                  "row_id": task.row_id, "attempt": attempt, "actor": dict(info),
                  "start": res["start"], "end": res["end"], "phases": phases}
        error = None
        for n in range(_COMMIT_TRIES):
            try:
                uri, wrote = self.store.commit_once(task.key, task.ext, data,
                                                    self.sidecar_for(task, params, data, origin))
                break
            except OSError as exc:
                error = describe(exc)
                if exc.errno in _NO_SPACE:
                    raise self._store_full(task, attempt, error, info, res, phases) from exc
                time.sleep(0.2 * (n + 1))
        else:
            return self._failure(task, TRANSIENT, f"commit to the store failed: {error}", info,
                                 res["start"], res["end"], phases, counted=True)
        kill_point("after-store-commit")
        phases["commit"] = time.perf_counter() - t0
        seconds = sum(float(phases.get(p, 0.0)) for p in _MODEL_PHASES)
        truncated = bool(res.get("truncated"))
        notes = row_notes(res, self.store.repairs.get(task.key))
        records = [self.ledger.record("attempt", **task_attempt(
            task, attempt=attempt, outcome="ok", actor=info, start=res["start"],
            end=res["end"], phases=phases, output_uri=uri, nbytes=len(data),
            truncated=truncated, notes=notes, already_stored=not wrote))]
        self.outcomes.set(task.row_index, status="done", key=task.key, output_uri=uri,
                          attempts=attempt, seconds=seconds, truncated=truncated, notes=notes)
        self.progress.row_done()
        now = time.time()
        for follower in self.followers.get(task.key, []):
            records.append(self.ledger.record("attempt", **task_attempt(
                follower, attempt=1, outcome="cache-hit", start=now, end=now,
                output_uri=uri, nbytes=len(data))))
            self.outcomes.set(follower.row_index, status="cache-hit", key=follower.key,
                              output_uri=uri, attempts=0, truncated=truncated, notes=notes)
            self.progress.row_hit()
        return records

    def _store_full(self, task: Task, attempt: int, error: str, info: Mapping[str, Any],
                    res: Mapping[str, Any], phases: Mapping[str, float]) -> StoreFull:
        message = (f"the output store {self.store.root!r} is out of space ({error}); free "
                   "space there (or pass another --store); started again, the run resumes "
                   "where it stopped")
        record = self.ledger.record("attempt", **task_attempt(
            task, attempt=attempt, outcome="retry-scheduled", error_class=TRANSIENT,
            error=f"commit to the store failed: {error}", actor=info, start=res["start"],
            end=res["end"], phases=phases))
        return StoreFull(message, [record])

    # -- failures -------------------------------------------------------------------------
    def _next_attempt(self, task: Task) -> int:
        n = self.counters.tries.get(task.row_index, 0) + 1
        self.counters.tries[task.row_index] = n
        return self.prior.get(task.row_index, 0) + n

    def _may_retry(self, task: Task, error_class: str, next_try: bool = False) -> bool:
        """Whether a row whose latest try failed gets another (``next_try``: asked before
        that try is counted)."""
        tries = self.spent.get(task.row_index, 0) + self.counters.tries.get(task.row_index, 0) \
            + next_try
        return error_class in (TRANSIENT, POISONED_DEVICE) and \
            tries < self.settings.max_attempts

    def _failure(self, task: Task, error_class: str, error: str | None,
                 info: Mapping[str, Any] | None, start: float, end: float,
                 phases: Mapping[str, float], retry_later: bool = True,
                 counted: bool = False, isolate: bool = False) -> list[dict[str, Any]]:
        """Record one failed try; schedule a retry (one row alone) or fail the row."""
        attempt = (self.prior.get(task.row_index, 0) + self.counters.tries[task.row_index]
                   if counted else self._next_attempt(task))
        retry = self._may_retry(task, error_class or TRANSIENT)
        outcome = "retry-scheduled" if retry else "failed-permanent"
        records = [self.ledger.record("attempt", **task_attempt(
            task, attempt=attempt, outcome=outcome, error_class=error_class or TRANSIENT,
            error=error, actor=info, start=start, end=end, phases=phases))]
        if retry:
            self.progress.retry()
            if retry_later:
                self._schedule([task], task, isolate)
            return records
        self.outcomes.set(task.row_index, status="failed", key=task.key, attempts=attempt,
                          error_class=error_class, reason=error)
        self.progress.row_failed()
        now = time.time()
        for follower in self.followers.get(task.key, []):
            # The owner's failure is the follower's too: its own failed-permanent record (no
            # actor, zero phases: the work and its cost belong to the owner's attempts) so
            # the ledger, and every report read from it, count it failed with the reason.
            reason = f"{error} (same key as row {task.row_index})"
            tried = self.prior.get(follower.row_index, 0) + 1
            records.append(self.ledger.record("attempt", **task_attempt(
                follower, attempt=tried, outcome="failed-permanent",
                error_class=error_class or TRANSIENT, error=reason, start=now, end=now)))
            self.outcomes.set(follower.row_index, status="failed", key=follower.key,
                              attempts=tried, error_class=error_class, reason=reason)
            self.progress.row_failed()
        return records

    def _schedule(self, tasks: list[Task], lead: Task, isolate: bool = False) -> None:
        tries = self.counters.tries.get(lead.row_index, 1)
        delay = min(self.settings.backoff_s * 2 ** (tries - 1), self.settings.backoff_max_s)
        heapq.heappush(self.delayed, (time.time() + delay, next(self._seq),
                                      Batch(tasks, isolate)))


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_lines(text: str, n: int = 3) -> str:
    """Why an actor died: the exception its __init__ raised (the last `XError: message` line of
    Ray's traceback text) when there is one, else the text's first lines."""
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip() and "^^^" not in ln]
    raised = [ln for ln in lines if _RAISED.match(ln)]
    if raised:
        return raised[-1][:600]
    return " ".join(lines[:n])[:400]

