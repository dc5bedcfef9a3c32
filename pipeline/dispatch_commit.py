"""What becomes of a row's try: its output committed, its ledger records, its retries.

- An ``ok`` row is committed to the store first (``Store.commit_once``: an intact output
  another run committed first is kept, and the record says ``already_stored``), then its
  ``ok`` attempt record is returned for the ledger. A commit is tried ``_COMMIT_TRIES`` times;
  a store out of space (ENOSPC, EDQUOT) stops the run (``StoreFull``, resumable).
- A failed try is recorded; it is retried (transient and poisoned-device classes) while the
  row has tries left of ``max_attempts``, counting earlier invocations' tries, so a resumed
  run ends as an uninterrupted one would.
- Rows waiting on a row's key (followers) end with it: a ``cache-hit`` record each when it
  commits, a ``failed-permanent`` one (no actor, zero phases) when it fails.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.dispatch_protocol import RowResult
from pipeline.errors import POISONED_DEVICE, TRANSIENT, describe
from pipeline.killpoints import kill_point
from pipeline.ledger import LedgerWriter
from pipeline.ledger_schema import model_seconds
from pipeline.outcomes import Outcomes
from pipeline.progress import RunProgress
from pipeline.records import Task, task_attempt
from pipeline.store import Store

_COMMIT_TRIES = 3
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)

Record = dict[str, Any]
SidecarFor = Callable[[Task, dict[str, Any], bytes, dict[str, Any]], dict[str, Any]]


class StoreFull(Exception):
    """The output store has no space left: the run stops (resumable); the message says so."""

    def __init__(self, message: str, records: list[Record]) -> None:
        super().__init__(message)
        self.records = records  # ledger records of the batch, to append before stopping


@dataclass(frozen=True, slots=True)
class Try:
    """One try of one row as it ended: who ran it, when (actor node clock), for how long."""

    task: Task
    actor: Mapping[str, Any] | None
    start: float
    end: float
    phases: Mapping[str, float]


def _memory_of(res: RowResult) -> dict[str, Any]:
    """The batch's memory figures (plan, resident_bytes, peak_device_bytes) an actor reported
    with the row, as the attempt's ``memory`` field; none from actors that do not report."""
    memory = res.extra.get("memory")
    return {"memory": dict(memory)} if isinstance(memory, Mapping) else {}


class Recorder:
    """Attempt numbering, retry decisions, commits and follower fan-out of a run's rows."""

    def __init__(self, *, store: Store, ledger: LedgerWriter, outcomes: Outcomes,
                 progress: RunProgress, followers: Mapping[str, list[Task]],
                 prior: Mapping[int, int], spent: Mapping[int, int], max_attempts: int,
                 params_for: Callable[[Task], dict[str, Any]], sidecar_for: SidecarFor,
                 retry: Callable[[Task, bool], None]) -> None:
        """prior: attempts numbered so far per row (numbering continues the ledger's); spent:
        tries earlier invocations spent per row (they count against ``max_attempts``);
        retry(task, isolate): queue one row for another try."""
        self.store, self.ledger, self.outcomes, self.progress = store, ledger, outcomes, progress
        self.followers = followers
        self.prior, self.spent = prior, spent
        self.max_attempts = max_attempts
        self.params_for, self.sidecar_for = params_for, sidecar_for
        self._retry = retry
        self.tries: dict[int, int] = {}  # row -> attempts this invocation

    def next_attempt(self, task: Task) -> int:
        n = self.tries.get(task.row_index, 0) + 1
        self.tries[task.row_index] = n
        return self.prior.get(task.row_index, 0) + n

    def may_retry(self, task: Task, error_class: str, next_try: bool = False) -> bool:
        """Whether a row whose latest try failed gets another (``next_try``: asked before
        that try is counted)."""
        tries = self.spent.get(task.row_index, 0) + self.tries.get(task.row_index, 0) + next_try
        return error_class in (TRANSIENT, POISONED_DEVICE) and tries < self.max_attempts

    # -- failures ---------------------------------------------------------------------------
    def failure(self, t: Try, error_class: str | None, error: str | None, *,
                schedule: bool = True, isolate: bool = False,
                counted: bool = False) -> tuple[list[Record], bool]:
        """Record one failed try -> (records, whether the row gets another try). The retry is
        queued here (one row, alone when ``isolate``) unless ``schedule`` is False; ``counted``:
        the try was numbered already (a commit that failed)."""
        task = t.task
        error_class = error_class or TRANSIENT
        attempt = (self.prior.get(task.row_index, 0) + self.tries[task.row_index]
                   if counted else self.next_attempt(task))
        retry = self.may_retry(task, error_class)
        records = [self.ledger.record("attempt", **task_attempt(
            task, attempt=attempt, outcome="retry-scheduled" if retry else "failed-permanent",
            error_class=error_class, error=error, actor=t.actor, start=t.start, end=t.end,
            phases=t.phases))]
        if retry:
            self.progress.retry()
            if schedule:
                self._retry(task, isolate)
            return records, True
        self.outcomes.set(task.row_index, status="failed", key=task.key, attempts=attempt,
                          error_class=error_class, reason=error)
        self.progress.row_failed()
        return records + self._followers_failed(task, error_class, error), False

    def _followers_failed(self, task: Task, error_class: str, error: str | None) -> list[Record]:
        # The owner's failure is the follower's too: its own failed-permanent record (no
        # actor, zero phases: the work and its cost belong to the owner's attempts) so the
        # ledger, and every report read from it, count it failed with the reason.
        records, now = [], time.time()
        for follower in self.followers.get(task.key, []):
            reason = f"{error} (same key as row {task.row_index})"
            tried = self.prior.get(follower.row_index, 0) + 1
            records.append(self.ledger.record("attempt", **task_attempt(
                follower, attempt=tried, outcome="failed-permanent", error_class=error_class,
                error=reason, start=now, end=now)))
            self.outcomes.set(follower.row_index, status="failed", key=follower.key,
                              attempts=tried, error_class=error_class, reason=reason)
            self.progress.row_failed()
        return records

    # -- commits ----------------------------------------------------------------------------
    def commit(self, t: Try, res: RowResult) -> list[Record]:
        """Store an ok row's output, then its records (a commit that keeps failing is a
        transient failure of the row; a full store raises StoreFull)."""
        task, phases = t.task, dict(t.phases)
        attempt = self.next_attempt(task)
        t0 = time.perf_counter()
        data: bytes = res.data or b""
        params = self.params_for(task)
        origin = {"run_id": self.ledger.run_id, "row_index": task.row_index,
                  "row_id": task.row_id, "attempt": attempt, "actor": dict(t.actor or {}),
                  "start": t.start, "end": t.end, "phases": phases}
        error = None
        for n in range(_COMMIT_TRIES):
            try:
                uri, wrote = self.store.commit_once(task.key, task.ext, data,
                                                    self.sidecar_for(task, params, data, origin))
                break
            except OSError as exc:
                error = describe(exc)
                if exc.errno in _NO_SPACE:
                    raise self._store_full(t, attempt, error) from exc
                time.sleep(0.2 * (n + 1))
        else:
            return self.failure(t, TRANSIENT, f"commit to the store failed: {error}",
                                counted=True)[0]
        kill_point("after-store-commit")
        phases["commit"] = time.perf_counter() - t0
        seconds = model_seconds(phases)
        # a damaged cached object this recomputes (Store.discard) is noted first
        repaired = getattr(self.store, "repairs", {}).get(task.key)
        truncated = res.truncated
        notes = "; ".join(n for n in (repaired, res.row_notes()) if n) or None
        records = [self.ledger.record("attempt", **task_attempt(
            task, attempt=attempt, outcome="ok", actor=t.actor, start=t.start, end=t.end,
            phases=phases, output_uri=uri, nbytes=len(data), truncated=truncated, notes=notes,
            already_stored=not wrote, **_memory_of(res)))]
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

    def _store_full(self, t: Try, attempt: int, error: str) -> StoreFull:
        message = (f"the output store {self.store.root!r} is out of space ({error}); free "
                   "space there (or pass another --store); started again, the run resumes "
                   "where it stopped")
        record = self.ledger.record("attempt", **task_attempt(
            t.task, attempt=attempt, outcome="retry-scheduled", error_class=TRANSIENT,
            error=f"commit to the store failed: {error}", actor=t.actor, start=t.start,
            end=t.end, phases=t.phases))
        return StoreFull(message, [record])
