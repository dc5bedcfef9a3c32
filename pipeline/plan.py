"""Planning: a cache key per row; committed rows are hits and never reach a model.

Streams the manifest once (batches of 8192 rows): per batch it digests the source images
(pipeline.digests, indexed by path/size/mtime), resolves each row's settings (manifest
value, else the CLI value, else the model preset's default) and computes its key. Then it
asks the store which keys are committed, in one listing pass (pipeline.store). Rows whose
key is committed are cache hits (or stay ``done`` when an earlier invocation of the same
run computed them), once the store has checked each one against its sidecar
(``Store.check_hits``: size and sidecar always; the full sha256 on a local store or with
--verify-cache); a damaged object is discarded and its row recomputed, the repair noted on
stderr, in the new sidecar and in the row's notes. Rows whose key another row already owns
wait for that row; the rest
become tasks, ordered so rows sharing (steps, guidance, size), then LoRA adapter set
(pipeline.loras), then source image, then instruction, sit next to each other and land in the
same batch.

Chained rows (image ``row:<row_id>``, pipeline.chains) are keyed after every other row, parents
first, from their parent's key; a row whose parent failed in planning fails with a reason
naming it. A chained row whose parent is computed in this run waits in a later wave
(``Plan.later``); one whose parent is committed runs in the first.

A resumed run (an earlier invocation was killed or interrupted) ends as an uninterrupted one
would: rows that invocation finished stay done, and rows it failed for good (their tries
spent, or a bad row found by the model) stay failed with their reason and are not run
again, as long as their key is unchanged. (A finished run is never resumed: running the
command again starts a new run, which tries its failed rows afresh.)

A row whose source is wrong (missing, a directory, no permission) fails here for good. One
whose source could not be read for a reason that may pass (I/O error, timeout: the digests
already tried again with backoff) has no key, so it cannot run now: it stays ``not-run`` with
a ``retry-scheduled`` record (error class transient), and running the command again retries it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from manifests import ManifestRow
from pipeline.cache import ModelSettings, RowSettings, cache_key, normalise_instruction
from pipeline.chains import chain_source, parent_failed_reason, run_chains
from pipeline.digests import SourceDigests
from pipeline.encode import extension, normalise_format, shared_output_spec
from pipeline.errors import BAD_ROW, TRANSIENT, PipelineError, describe
from pipeline.ledger import LedgerWriter
from pipeline.ledger_schema import model_seconds
from pipeline.manifest_input import BadRow, CheckedManifest, iter_manifest
from pipeline.outcomes import Outcomes
from pipeline.records import Task, attempt_fields, task_attempt
from pipeline.resume import RunHistory
from pipeline.store import Store, StoredObject

if TYPE_CHECKING:
    from pipeline.loras import LoraResolver, RowLoras

_FLUSH_RECORDS = 8192


@dataclass(frozen=True)
class RowDefaults:
    """Values for rows that leave a column empty (CLI flag, else the preset's default)."""

    steps: int
    guidance: float
    output_format: str
    # the run's LoRA adapters and each row's own (pipeline.loras); None: no adapters anywhere
    loras: LoraResolver | None = None


@dataclass
class Plan:
    tasks: list[Task] = field(default_factory=list)  # one per key to compute, batch order
    # chained rows whose parent is computed in this run: wave 1, 2, ... (each in batch order)
    later: list[list[Task]] = field(default_factory=list)
    chain_parent: dict[int, int] = field(default_factory=dict)  # child row -> parent row
    # chained row to compute -> (parent's key, parent's extension): where its source is stored
    chain_sources: dict[int, tuple[str, str]] = field(default_factory=dict)
    followers: dict[str, list[Task]] = field(default_factory=dict)  # same key, later rows
    hits: int = 0
    done_before: int = 0  # computed by an earlier invocation of this run
    failed: int = 0  # this invocation's planning failures plus failures carried from earlier
    deferred: int = 0  # source unreadable for now (transient): not run, a re-run retries it
    hashed_sources: int = 0

    @property
    def all_tasks(self) -> list[Task]:
        """Every row to compute, first wave first."""
        return [*self.tasks, *(t for wave in self.later for t in wave)]


class _Records:
    """Buffers attempt records and appends them in chunks (one fsync per chunk)."""

    def __init__(self, ledger: LedgerWriter) -> None:
        self.ledger = ledger
        self.buffer: list[dict] = []

    def add(self, fields: dict) -> None:
        self.buffer.append(self.ledger.record("attempt", **fields))
        if len(self.buffer) >= _FLUSH_RECORDS:
            self.flush()

    def flush(self) -> None:
        self.ledger.append(self.buffer)
        self.buffer = []


def _row_settings(row: ManifestRow, defaults: RowDefaults
                  ) -> tuple[int, float, tuple[int, int] | None, str]:
    if (row.width is None) != (row.height is None):
        raise ValueError("give both width and height, or neither (the model's size policy)")
    size = (int(row.width), int(row.height)) if row.width is not None else None
    steps = int(row.steps) if row.steps is not None else defaults.steps
    guidance = float(row.guidance) if row.guidance is not None else defaults.guidance
    fmt = normalise_format(row.output_format or defaults.output_format)
    return steps, guidance, size, fmt


def make_task(row: ManifestRow, image_sha256: str, model: ModelSettings,
              defaults: RowDefaults) -> Task:
    """The row with its settings resolved and its cache key; ValueError for bad settings."""
    steps, guidance, size, fmt = _row_settings(row, defaults)
    # Rows share images and instructions: one string object each keeps 200k rows small.
    instruction = sys.intern(normalise_instruction(row.instruction))
    loras = _row_loras(row, defaults)
    key = cache_key(image_sha256, instruction, row.seed, model,
                    RowSettings(steps, guidance, size, shared_output_spec(fmt),
                                loras.key if loras is not None else None))
    return Task(row.row_index, row.row_id, sys.intern(row.image), image_sha256, instruction,
                int(row.seed), steps, guidance, size, fmt, extension(fmt), key, row.product_id,
                row.variant, loras)


def _row_loras(row: ManifestRow, defaults: RowDefaults) -> RowLoras | None:
    """The row's adapter set (its lora column, else the run's); a bad adapter raises LoraError,
    a ValueError: the row fails alone with the reason."""
    specs = getattr(row, "lora", None)
    if defaults.loras is None:
        if specs:
            raise ValueError(f"lora {list(specs)!r}: this caller planned without LoRA support; "
                             "run the manifest with kontext-batch run")
        return None
    return defaults.loras.for_row(specs)


def plan_run(checked: CheckedManifest, *, run_id: str, model: ModelSettings,
             defaults: RowDefaults, digests: SourceDigests, store: Store,
             history: RunHistory, ledger: LedgerWriter, outcomes: Outcomes,
             verify_cache: bool = False,
             progress: Callable[[int], None] | None = None) -> Plan:
    """Keys for every row, hits recorded; returns the rows still to compute."""
    plan = Plan()
    records = _Records(ledger)
    candidates: list[Task] = []
    now = time.time()

    def fail_row(index: int, row_id: str, reason: str, image, instruction, seed, product_id,
                 variant, error_class: str = BAD_ROW) -> None:
        prev = history.rows.get(index)
        attempt = (prev.attempts if prev else 0) + 1
        transient = error_class == TRANSIENT  # may pass: not run now, never failed for good
        if transient:
            reason += "; not run: running the same command again retries this row"
        records.add(attempt_fields(
            row_id=row_id, row_index=index, key=None, attempt=attempt,
            outcome="retry-scheduled" if transient else "failed-permanent",
            error_class=error_class, error=reason, start=now, end=now, image=image,
            instruction=instruction, seed=seed, product_id=product_id, variant=variant))
        outcomes.set(index, status="not-run" if transient else "failed", row_id=row_id,
                     attempts=attempt, error_class=error_class, reason=reason)
        if transient:
            plan.deferred += 1
        else:
            plan.failed += 1

    parent_of, chain_order = run_chains(checked)
    plan.chain_parent = parent_of
    held: dict[int, ManifestRow] = {}  # chained rows: keyed once every parent has its key
    hashed_before = digests.hashed
    for batch in iter_manifest(checked):
        good = [r for r in batch if isinstance(r, ManifestRow) and r.row_index not in parent_of]
        sources = digests.digest_many(r.image for r in good)
        for row in batch:
            if isinstance(row, BadRow):
                fail_row(row.row_index, row.row_id, row.reason, row.image, row.instruction,
                         row.seed, row.product_id, row.variant)
                continue
            outcomes.row_id[row.row_index] = row.row_id
            if row.row_index in parent_of:
                held[row.row_index] = row
                continue
            digest = sources[row.image]
            if not isinstance(digest, str):
                known = isinstance(digest, PipelineError)
                fail_row(row.row_index, row.row_id, str(digest) if known else describe(digest),
                         row.image, row.instruction, row.seed, row.product_id, row.variant,
                         digest.error_class if known else BAD_ROW)
                continue
            try:
                task = make_task(row, digest, model, defaults)
            except ValueError as exc:
                fail_row(row.row_index, row.row_id, str(exc), row.image, row.instruction,
                         row.seed, row.product_id, row.variant)
                continue
            outcomes.key[row.row_index] = task.key
            candidates.append(task)
        if progress is not None:
            progress(len(batch))
    plan.hashed_sources = digests.hashed - hashed_before
    _key_chained(chain_order, held, parent_of, model, defaults, outcomes, candidates, plan,
                 fail_row)

    wanted = {t.key: t.ext for t in candidates}
    present = store.present(wanted)
    _drop_damaged(store, present, full=verify_cache or store.is_local)

    owners: dict[str, Task] = {}
    wave_of: dict[int, int] = {}  # rows computed in this run (owners and followers) -> wave
    for task in candidates:
        stored = present.get(task.key)
        parent = parent_of.get(task.row_index)
        if stored is not None:
            _classify_present(task, stored, run_id, history, store, records, outcomes, plan)
        elif _carry_failure(task, history, outcomes):
            plan.failed += 1
        elif parent is not None and outcomes.status[parent] == "failed":
            _fail_child(task, parent, history, records, outcomes)
            plan.failed += 1
        elif task.key in owners:
            plan.followers.setdefault(task.key, []).append(task)
            wave_of[task.row_index] = wave_of[owners[task.key].row_index]
        else:
            owners[task.key] = task
            wave = wave_of[parent] + 1 if parent in wave_of else 0
            wave_of[task.row_index] = wave
            _add_to_wave(plan, task, wave)
    records.flush()
    for tasks in [plan.tasks, *plan.later]:
        tasks.sort(key=lambda t: (t.steps, t.guidance, t.size or (0, 0),
                                  t.loras.token if t.loras else "", t.image_sha256,
                                  t.instruction, t.row_index))
    return plan


def _add_to_wave(plan: Plan, task: Task, wave: int) -> None:
    if wave == 0:
        plan.tasks.append(task)
        return
    while len(plan.later) < wave:
        plan.later.append([])
    plan.later[wave - 1].append(task)


def _key_chained(order: list[int], held: dict[int, ManifestRow], parent_of: dict[int, int],
                 model: ModelSettings, defaults: RowDefaults, outcomes: Outcomes,
                 candidates: list[Task], plan: Plan, fail_row: Callable[..., None]) -> None:
    """Key the chained rows, parents first: each from its parent's key (pipeline.chains)."""
    ext_of = {t.row_index: t.ext for t in candidates}
    for index in order:
        row = held.get(index)
        if row is None:
            continue  # a bad row: failed while streaming
        parent = parent_of[index]
        parent_key = outcomes.key[parent]
        if parent_key is None:  # the parent failed in planning, or could not be read now
            deferred = outcomes.status[parent] == "not-run"
            reason = (f"parent row {outcomes.row_id[parent]!r} was not run "
                      f"({outcomes.reason[parent]})" if deferred else
                      parent_failed_reason(outcomes.row_id[parent], outcomes.reason[parent]))
            fail_row(index, row.row_id, reason, row.image, row.instruction, row.seed,
                     row.product_id, row.variant, outcomes.error_class[parent] or BAD_ROW)
            continue
        try:
            task = make_task(row, chain_source(parent_key), model, defaults)
        except ValueError as exc:
            fail_row(index, row.row_id, str(exc), row.image, row.instruction, row.seed,
                     row.product_id, row.variant)
            continue
        outcomes.key[index] = task.key
        ext_of[index] = task.ext
        plan.chain_sources[index] = (parent_key, ext_of[parent])
        candidates.append(task)


def _fail_child(task: Task, parent: int, history: RunHistory, records: _Records,
                outcomes: Outcomes) -> None:
    """A chained row whose parent stays failed (an earlier invocation failed it for good)."""
    prev = history.rows.get(task.row_index)
    attempt = (prev.attempts if prev else 0) + 1
    reason = parent_failed_reason(outcomes.row_id[parent], outcomes.reason[parent])
    error_class = outcomes.error_class[parent] or BAD_ROW
    now = time.time()
    records.add(task_attempt(task, attempt=attempt, outcome="failed-permanent",
                             error_class=error_class, error=reason, start=now, end=now))
    outcomes.set(task.row_index, status="failed", key=task.key, attempts=attempt,
                 error_class=error_class, reason=reason)


def _drop_damaged(store: Store, present: dict[str, StoredObject], full: bool) -> None:
    """Discard the stored objects that fail their check, so their rows are recomputed.

    Full hashing on a local store by default: sha256 runs at ~1.1 GB/s a core, and 20k hits of
    8 KB took 0.35 s of sidecar reads + 0.43 s of hashing (2-core dev box, warm page cache);
    on object stores it would download every output, so there only --verify-cache asks."""
    damaged = store.check_hits(present, full=full)
    for key, why in damaged.items():
        store.discard(key, present.pop(key).ext, why)
    if damaged:
        first = next(iter(damaged.values()))
        print(f"note: {len(damaged)} stored output(s) failed their check against the sidecar "
              f"and will be recomputed (e.g. {first})", file=sys.stderr)


def _classify_present(task: Task, stored: StoredObject, run_id: str, history: RunHistory,
                      store: Store, records: _Records, outcomes: Outcomes, plan: Plan) -> None:
    """A row whose output is committed: done earlier in this run, recovered, or a hit."""
    uri = store.uri(task.key, task.ext)
    prev = history.rows.get(task.row_index)
    if prev is not None and prev.key == task.key and prev.final in ("ok", "cache-hit"):
        done = prev.final == "ok"
        outcomes.set(task.row_index, status="done" if done else "cache-hit", key=task.key,
                     output_uri=uri, attempts=prev.attempts,
                     seconds=prev.seconds if done else None)
        plan.done_before += done
        plan.hits += not done
        return
    origin = _committed_by_this_run(task, stored, run_id, history, store)
    if origin is not None:
        # Committed by a killed invocation of this run before its ledger line was written.
        attempt = (prev.attempts if prev else 0) + 1
        records.add(task_attempt(task, attempt=attempt, outcome="ok",
                                 actor=origin.get("actor"), start=origin.get("start"),
                                 end=origin.get("end"), phases=origin.get("phases"),
                                 output_uri=uri, nbytes=stored.size, recovered=True))
        seconds = model_seconds(origin.get("phases"))
        outcomes.set(task.row_index, status="done", key=task.key, output_uri=uri,
                     attempts=attempt, seconds=seconds)
        plan.done_before += 1
        return
    now = time.time()
    records.add(task_attempt(task, attempt=1, outcome="cache-hit", start=now, end=now,
                             output_uri=uri, nbytes=stored.size))
    outcomes.set(task.row_index, status="cache-hit", key=task.key, output_uri=uri,
                 attempts=prev.attempts if prev else 0)
    plan.hits += 1


def _carry_failure(task: Task, history: RunHistory, outcomes: Outcomes) -> bool:
    """A row an earlier invocation of this run failed for good, with this key: it stays
    failed (its ledger already says so and why); True if so."""
    prev = history.rows.get(task.row_index)
    if prev is None or prev.final != "failed-permanent" or prev.key != task.key:
        return False
    outcomes.set(task.row_index, status="failed", key=task.key, attempts=prev.attempts,
                 error_class=prev.error_class, reason=prev.error)
    return True


def _committed_by_this_run(task: Task, stored: StoredObject, run_id: str,
                           history: RunHistory, store: Store) -> dict | None:
    if not history.exists or history.first_start is None:
        return None
    if stored.mtime_ns / 1e9 < history.first_start - 1.0:
        return None  # older than this run: cannot be its work (no sidecar read needed)
    try:
        side = store.read_sidecar(task.key)
    except (OSError, ValueError):
        return None
    origin = side.get("origin") or {}
    if origin.get("run_id") == run_id and origin.get("row_index") == task.row_index:
        return origin
    return None
