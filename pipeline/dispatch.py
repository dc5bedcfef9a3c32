"""The driver's dispatch loop: batches to actors, results to the store and the ledger.

Its parts: pipeline.dispatch_policy (which batch goes to which actor and when: groups, OOM
caps, in-flight limits, isolated retries, backoff, the budget; no Ray), dispatch_pool (the
actors: probes, restarts, deaths, clock offsets, load/stop records), dispatch_commit (each
try's store commit, attempt records, retries, followers), dispatch_protocol (the batch
request/result dataclasses) and dispatch_marks (which batch a dead actor had started).

This loop reads a batch's sources (dispatch_sources: concurrently), submits it and hands
each result to the commit step. Bad rows fail at once; transient and poisoned-device ones are
retried, OOM rows in halved batches, rows of a dead actor one by one, each alone in its actor
process (a row that kills its actor fails alone). Ray restarts a dead actor; only a batch that
had started its model call (marked first, pipeline.dispatch_marks) or ran alone is charged;
one queued behind it is sent again, alone and uncharged, so a second death is its own.
A full store stops the run (``StoreFull``, resumable). On the budget's first "no" nothing more
is dispatched, batches in flight finish, undispatched rows are ``not-run`` ("budget cap
reached") and a ``budget-stop`` record is written.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.dispatch_commit import Recorder, StoreFull, Try
from pipeline.dispatch_policy import Batch, BudgetHook, SchedulingPolicy, make_batches
from pipeline.dispatch_pool import ActorPool, ActorSlot, RunAborted
from pipeline.dispatch_protocol import (
    TRUNCATED_NOTE,
    BatchRequest,
    BatchResult,
    RowRequest,
    row_notes,
)
from pipeline.dispatch_sources import SourceReader
from pipeline.errors import POISONED_DEVICE, TRANSIENT, PipelineError, describe
from pipeline.image_io import DEFAULT_MAX_PIXELS
from pipeline.killpoints import kill_point
from pipeline.ledger import LedgerWriter
from pipeline.outcomes import Outcomes
from pipeline.progress import RunProgress
from pipeline.records import Task
from pipeline.store import CorruptObjectError, Store

__all__ = ["ActorSlot", "Batch", "BudgetHook", "Dispatcher", "DispatchSettings", "RunAborted",
           "StoreFull", "TRUNCATED_NOTE", "BUDGET_REASON", "make_batches", "row_notes"]

BUDGET_REASON = "budget cap reached"


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
class _Flight:
    slot: ActorSlot
    tasks: dict[int, Task]
    read: dict[int, float]  # row -> seconds its source read took
    submitted: float
    isolate: bool = False
    batch_id: int = 0


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
                 spent_attempts: Mapping[int, int] | None = None, ray: Any = None,
                 embeddings: Callable[[str], bytes | None] | None = None,
                 sources: SourceReader | None = None) -> None:
        """prior_attempts: attempts per row so far (numbering continues the ledger's);
        spent_attempts: tries earlier invocations spent per row, counted against
        max_attempts (default: every prior attempt); ray: the Ray API (tests pass a fake);
        embeddings: an instruction's stored embedding bytes (pipeline.text_phase), sent with
        its batches; sources: the reader of the rows' source bytes (chained rows read their
        parent's output: pipeline.chains)."""
        if ray is None:
            import ray  # the driver side only: planning and tests of it do not need Ray
        self._ray = ray
        self.settings = settings
        self.ledger, self.outcomes, self.followers = ledger, outcomes, followers
        self.params_for = params_for
        self.node_alive = node_alive or (lambda node: True)
        listen = getattr(budget, "listen", None)
        if listen is not None:  # the budget meters the records as they are written (jobs.budget)
            listen(ledger)
        self.pool = ActorPool(ray, slots, ledger, settings.restart_timeout_s)
        self.policy = SchedulingPolicy(
            batch_size=settings.batch_size, in_flight_per_actor=settings.in_flight_per_actor,
            backoff_s=settings.backoff_s, backoff_max_s=settings.backoff_max_s, budget=budget)
        self.recorder = Recorder(
            store=store, ledger=ledger, outcomes=outcomes, progress=progress,
            followers=followers, prior=prior_attempts,
            spent=prior_attempts if spent_attempts is None else spent_attempts,
            max_attempts=settings.max_attempts, params_for=params_for, sidecar_for=sidecar_for,
            retry=self._retry_row)
        self.budget = budget
        self.rows_not_dispatched = 0
        self.in_flight: dict[Any, _Flight] = {}
        self.sources = sources or SourceReader()
        self._batch_ids = itertools.count(1)
        self.embeddings = embeddings

    @property
    def slots(self) -> list[ActorSlot]:
        return self.pool.slots

    @property
    def budget_stopped(self) -> bool:
        return self.policy.stopped

    def cap_for(self, group: tuple) -> int:
        """The batch size a group's batches get now (see SchedulingPolicy.cap_for)."""
        return self.policy.cap_for(group)

    # -- public -------------------------------------------------------------------------
    def run(self, tasks: Sequence[Task],
            next_wave: Callable[[], Sequence[Task]] | None = None) -> None:
        """``next_wave()``: asked each time every row so far is settled, for the rows that
        may run now (chained rows whose parents settled: pipeline.chains); [] ends the run."""
        self.pool.start()
        self.policy.add(tasks)
        self.sources.open()
        try:
            self._loop()
            while next_wave is not None and (wave := next_wave()):
                self.policy.add(wave)
                self._loop()
        finally:
            self.sources.close()

    def stop_actors(self, timeout_s: float = 30.0) -> None:
        """Ask live actors for their stop time (actor-stop records), then end them."""
        self.pool.stop(timeout_s)

    def _loop(self) -> None:
        while self.policy.pending or self.in_flight:
            self.policy.release_due()
            self.pool.probe_restarting()
            self._fill()
            waiting = list(self.in_flight) + list(self.pool.describing)
            self.pool.check_alive()
            if not waiting:
                time.sleep(self._idle_pause())
                continue
            ready, _ = self._ray.wait(waiting, num_returns=1, timeout=self._idle_pause())
            if ready:
                more, _ = self._ray.wait(waiting, num_returns=len(waiting), timeout=0)
                for ref in dict.fromkeys([*ready, *more]):
                    if ref in self.pool.describing:
                        self.pool.described(ref)
                    elif ref in self.in_flight:
                        self._complete(ref)

    def _idle_pause(self) -> float:
        """Until the next delayed retry or restart probe is due (at most 0.5 s)."""
        now = time.time()
        due = [t for t in [self.policy.next_due(), *self.pool.probe_times()] if t is not None]
        return max(0.01, min([0.5, *(t - now for t in due)]))

    # -- dispatch -------------------------------------------------------------------------
    def _fill(self) -> None:
        for slot, batch in self.policy.assignments(self.pool.slots):
            self._submit(slot, batch)
        if self.policy.stopped:
            self._drop_for_budget()  # retries scheduled after the stop are not run either

    def _retry_row(self, task: Task, isolate: bool) -> None:
        self.policy.retry_later([task], self.recorder.tries.get(task.row_index, 1), isolate)

    def _drop_for_budget(self) -> None:
        """Mark every queued or delayed row not-run and record the stop (cumulative count)."""
        dropped = 0
        for batch in self.policy.drop_all():
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
        rows, tasks, read, failed_records = [], {}, {}, []
        for task, (data, seconds) in zip(batch.tasks, self.sources.read(batch.tasks),
                                         strict=True):
            if isinstance(data, PipelineError):
                now = time.time()
                failed_records += self.recorder.failure(
                    Try(task, None, now, now, {"read": seconds}), data.error_class, str(data))[0]
                continue
            read[task.row_index] = seconds
            tasks[task.row_index] = task
            rows.append(RowRequest(
                row_index=task.row_index, row_id=task.row_id, key=task.key,
                instruction=task.instruction, seed=task.seed, image_bytes=data,
                image_sha256=task.image_sha256, output_format=task.output_format,
                params=self.params_for(task)))
        self.ledger.append(failed_records)
        if not rows:
            return
        first, batch_id = batch.tasks[0], next(self._batch_ids)
        request = BatchRequest(rows=rows, steps=first.steps, guidance=first.guidance,
                               size=first.size, max_pixels=self.settings.max_pixels,
                               step_cache=self.settings.step_cache, batch_id=batch_id,
                               marks=self.pool.marks, embeddings=self._embeddings_of(rows),
                               loras=first.loras.to_wire() if first.loras else None)
        ref = slot.handle.edit_batch.remote(request.to_wire())
        kill_point("after-submit")
        slot.in_flight += 1
        slot.exclusive = batch.isolate
        self.in_flight[ref] = _Flight(slot, tasks, read, time.time(), batch.isolate, batch_id)

    def _embeddings_of(self, rows: Sequence[RowRequest]) -> dict[str, bytes] | None:
        """The batch's instructions' stored embeddings (one unreadable is left out: the actor's
        editor then says which instruction it lacks)."""
        if self.embeddings is None:
            return None
        out = {}
        for text in dict.fromkeys(r.instruction for r in rows):
            try:
                data = self.embeddings(text)
            except (OSError, ValueError, CorruptObjectError):
                data = None
            if data is not None:
                out[text] = data
        return out

    # -- results --------------------------------------------------------------------------
    def _complete(self, ref: Any) -> None:
        flight = self.in_flight.pop(ref)
        flight.slot.in_flight -= 1
        if flight.isolate:
            flight.slot.exclusive = False
        ray = self._ray
        try:
            result = BatchResult.from_wire(ray.get(ref))
        except ray.exceptions.RayActorError as exc:
            self._batch_lost(flight, exc)
            return
        except Exception as exc:  # the task itself failed (object lost, ...): transient
            self._batch_failed(flight, TRANSIENT, describe(exc))
            return
        kill_point("result-received")
        self.pool.note_actor(result.actor, flight.slot)
        self.pool.learn_clock(flight.slot.node, result.latest_end)
        records, oom_rows = self._row_records(flight, result)
        self.ledger.append(records)
        if any(r.get("outcome") == "ok" for r in records):
            kill_point("after-ledger-append")
        if oom_rows:
            lead = oom_rows[0]
            for rows in self.policy.shrink(lead.group, oom_rows, len(result.rows)):
                self.policy.retry_later(rows, self.recorder.tries.get(lead.row_index, 1))

    def _row_records(self, flight: _Flight, result: BatchResult
                     ) -> tuple[list[dict[str, Any]], list[Task]]:
        """Each row's records (ok rows committed first) and the rows to retry after OOM."""
        records: list[dict[str, Any]] = []
        oom_rows: list[Task] = []
        try:
            for res in result.rows:
                task = flight.tasks[res.row_index]
                phases = {**res.phases, "read": flight.read.get(task.row_index, 0.0)}
                tried = Try(task, result.actor, res.start, res.end, phases)
                if res.ok:
                    records += self.recorder.commit(tried, res)
                    continue
                recs, retry = self.recorder.failure(
                    tried, TRANSIENT if res.oom else res.error_class, res.error,
                    schedule=not res.oom)
                records += recs
                if res.oom and retry:
                    oom_rows.append(task)
        except StoreFull as full:
            self.ledger.append(records + full.records)  # what did commit stays recorded
            raise
        return records, oom_rows

    def _batch_lost(self, flight: _Flight, exc: BaseException) -> None:
        slot = flight.slot
        if self.pool.actor_failed(slot, exc):
            # The model never loaded there: not the rows' fault, requeue without an attempt.
            self.policy.requeue_front(Batch(list(flight.tasks.values()), flight.isolate))
            return
        self.pool.pause(slot)  # Ray restarts it; no new batches until it answers a probe
        if not flight.isolate and not self.pool.had_started(slot, flight.batch_id):
            # Queued behind the batch that died: not its fault, no attempt spent. Alone next
            # time, so that if it does kill an actor (before its model call) it is charged.
            self.policy.requeue_front(Batch(list(flight.tasks.values()), isolate=True))
            return
        node_lost = slot.node is not None and not self.node_alive(slot.node)
        error_class = TRANSIENT if node_lost else POISONED_DEVICE
        what = "its node was lost" if node_lost else "the actor process died"
        self._batch_failed(flight, error_class, f"{what} mid-batch ({type(exc).__name__})",
                           isolate=True, retry_note="; retried elsewhere")

    def _batch_failed(self, flight: _Flight, error_class: str, message: str,
                      isolate: bool = False, retry_note: str = "") -> None:
        # Only the driver saw this batch go (no result came back): its times are the driver's,
        # put on the actor node's clock, as every other time of that actor is (the report
        # closes the actor's holding with them).
        shift = self.pool.shift(flight.slot)
        now = time.time() - shift
        records = []
        for task in flight.tasks.values():
            # the note ("retried elsewhere") only where a try is left: no false promise
            retries = self.recorder.may_retry(task, error_class, next_try=True)
            tried = Try(task, flight.slot.info or None, flight.submitted - shift, now,
                        {"read": flight.read.get(task.row_index, 0.0)})
            records += self.recorder.failure(tried, error_class, message + retry_note * retries,
                                             isolate=isolate)[0]
        self.ledger.append(records)
