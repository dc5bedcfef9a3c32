"""Chained edits in a run: a row whose image is ``row:<row_id>`` edits that row's output.

- The graph (child row -> parent row) comes from the manifest (manifests.validate.chain_graph);
  a missing parent or a cycle was refused by validation before any work (exit 2).
- Keys: a child's key is the usual key with the source digest replaced by
  ``chain:<parent's key>`` (``chain_source``), so it is known at plan time from the parent's
  key alone (hits are known up front), and a changed parent changes exactly its descendants.
- Waves: a child whose parent is already committed runs in the first wave; one whose parent is
  computed in this run runs in the wave after its parent's. The Dispatcher asks
  ``ChainWaves`` for the next wave once the previous one is settled.
- A failed parent fails its children (their reason names it); a parent left not run leaves
  its children not run. The child's source bytes are the parent's committed output, read from
  the store by key (pipeline.dispatch_sources) and decoded as any source.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from manifests.rules import CHAIN_PREFIX
from manifests.validate import chain_graph
from pipeline.ledger import LedgerWriter
from pipeline.ledger_schema import NOT_RUN
from pipeline.manifest_input import CheckedManifest
from pipeline.outcomes import Outcomes
from pipeline.progress import RunProgress
from pipeline.records import Task, task_attempt

CHAIN_SOURCE = "chain:"  # the key document's "image" of a chained row: not a sha256 hex


def chain_source(parent_key: str) -> str:
    """The source digest a child's key is computed with: its parent's output key, marked."""
    return CHAIN_SOURCE + parent_key


def parent_row_id(image: str | None) -> str | None:
    """The parent id of a ``row:<row_id>`` image reference (results, ledger), else None."""
    if isinstance(image, str) and image.startswith(CHAIN_PREFIX):
        return image[len(CHAIN_PREFIX):]
    return None


def run_chains(checked: CheckedManifest) -> tuple[dict[int, int], list[int]]:
    """(child row index -> parent row index, chained rows parents first) of a validated
    manifest; ({}, []) when it has no chains."""
    graph = chain_graph(checked.path, data=checked.data)
    depth = graph.depth()
    return graph.parent, sorted(graph.parent, key=lambda row: (depth[row], row))


def parent_failed_reason(parent_id: str | None, parent_reason: str | None) -> str:
    return (f"parent row {parent_id!r} failed ({parent_reason or 'no reason recorded'}); "
            "this row edits its output: fix the parent row and run again")


def parent_not_run_reason(parent_id: str | None, parent_reason: str | None) -> str:
    return (f"not run: parent row {parent_id!r} was not run "
            f"({parent_reason or 'the run stopped first'})")


class ChainWaves:
    """The Dispatcher's ``next_wave``: each later wave, once the previous one is settled, less
    the rows whose parent failed (failed here, with its followers) or was not run."""

    def __init__(self, waves: Sequence[Sequence[Task]], parent_of: Mapping[int, int], *,
                 outcomes: Outcomes, ledger: LedgerWriter, progress: RunProgress,
                 followers: Mapping[str, list[Task]], prior_attempts: Mapping[int, int]) -> None:
        self.waves = [list(w) for w in waves]
        self.parent_of = parent_of
        self.outcomes, self.ledger, self.progress = outcomes, ledger, progress
        self.followers = followers
        self.prior = prior_attempts

    def __call__(self) -> list[Task]:
        while self.waves:
            records: list[dict[str, Any]] = []
            ready = [t for t in self.waves.pop(0) if self._ready(t, records)]
            self.ledger.append(records)
            if ready:
                return ready
        return []

    def _ready(self, task: Task, records: list[dict[str, Any]]) -> bool:
        parent = self.parent_of[task.row_index]
        state = self.outcomes.status[parent]
        if state in ("done", "cache-hit"):
            return True
        parent_id = self.outcomes.row_id[parent]
        error_class, why = self.outcomes.error_class[parent], self.outcomes.reason[parent]
        for row in [task, *self.followers.get(task.key, [])]:
            if state == NOT_RUN:
                self.outcomes.set(row.row_index, status=NOT_RUN, key=row.key,
                                  error_class=error_class,
                                  reason=parent_not_run_reason(parent_id, why))
                continue
            reason = parent_failed_reason(parent_id, why)
            attempt = self.prior.get(row.row_index, 0) + 1
            now = time.time()
            records.append(self.ledger.record("attempt", **task_attempt(
                row, attempt=attempt, outcome="failed-permanent", error_class=error_class,
                error=reason, start=now, end=now)))
            self.outcomes.set(row.row_index, status="failed", key=row.key, attempts=attempt,
                              error_class=error_class, reason=reason)
            self.progress.row_failed()
        return False
