"""One batch run, end to end: check, plan, dispatch, commit, results, reports.

Order matters for the error classes: everything that can be a config error (flags, model,
manifest file, cluster address) is checked before any work and before a local Ray starts;
a run that is all cache hits never starts Ray nor loads a model.

    OUT/store/objects/<key[:2]>/<key>.<ext>   outputs (+ .json sidecar)   (or --store URI)
    OUT/runs/<run_id>/config.json, ledger.jsonl, results.parquet, report.*, sheets/, review.html
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifests import limits
from manifests.paths import SUPPORTED_SCHEMES, uri_scheme
from pipeline.cache import numerics_version
from pipeline.chains import ChainWaves
from pipeline.cluster import (
    actor_layout,
    cluster_resources,
    connect,
    resolve_device,
)
from pipeline.digests import SourceDigests, default_index_path
from pipeline.dispatch import (
    ActorSlot,
    BudgetHook,
    Dispatcher,
    DispatchSettings,
    RunAborted,
    StoreFull,
)
from pipeline.dispatch_sources import SourceReader
from pipeline.encode import normalise_format
from pipeline.errors import ConfigError, RunFolderFull
from pipeline.killpoints import kill_point
from pipeline.ledger import NO_SPACE, LedgerWriter, run_folder_full_message
from pipeline.manifest_input import check_manifest
from pipeline.model_info import ModelInfo, resolve_model_info
from pipeline.outcomes import Outcomes
from pipeline.plan import plan_run
from pipeline.progress import RunProgress
from pipeline.records import Task
from pipeline.resume import base_run_id
from pipeline.run_config import (
    CONFIG_FILE,
    DEFAULT_MODEL,
    ConfigDocument,
    RunConfig,
    derive_settings,
    write_config_file,
)
from pipeline.run_ids import check_run_id
from pipeline.run_summary import resume_line_from_history, run_summary_lines
from pipeline.runlock import acquire_run
from pipeline.store import Store

DEMO_MANIFEST = Path(__file__).resolve().parent.parent / "manifests" / "examples" / "demo" / \
    "manifest.parquet"


@dataclass
class RunSummary:
    run_id: str
    run_dir: Path
    store: str
    results: Path | None
    status: str  # complete | failed-rows | budget-stopped | interrupted
    counts: dict[str, int]
    exit_code: int
    actors_started: int = 0
    hashed_sources: int = 0
    reports: dict[str, str] = field(default_factory=dict)
    report_error: str | None = None
    stop_reason: str | None = None  # why an interrupted run stopped (e.g. the store is full)


def check_flags(config: RunConfig) -> None:
    """Flag values a user can get wrong; ConfigError with the fix."""
    if config.run_id is not None:  # library and job callers too, not only the CLI
        check_run_id(config.run_id)
    if config.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {config.batch_size})")
    if config.actors is not None and config.actors < 1:
        raise ConfigError(f"--actors must be at least 1 (got {config.actors})")
    if config.steps is not None and not limits.steps_in_range(config.steps):
        raise ConfigError(f"--steps must be {limits.range_text(limits.MIN_STEPS, limits.MAX_STEPS)}"
                          f" (got {config.steps})")
    if config.guidance is not None and not limits.guidance_in_range(config.guidance):
        between = limits.range_text(limits.MIN_GUIDANCE, limits.MAX_GUIDANCE)
        raise ConfigError(f"--guidance must be {between} (got {config.guidance})")
    if config.max_attempts < 1:
        raise ConfigError(f"--max-attempts must be at least 1 (got {config.max_attempts})")
    if config.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be at least 1 (got {config.max_pixels})")
    if config.step_cache is not None and not limits.step_cache_in_range(config.step_cache):
        between = limits.range_text(limits.MIN_STEP_CACHE, limits.MAX_STEP_CACHE)
        raise ConfigError(f"--step-cache must be {between} (got {config.step_cache}); "
                          "0.1 is a reasonable start")
    for root in config.image_roots or ():
        if "://" in str(root):
            scheme = str(root).split("://", 1)[0].lower()
            if scheme not in SUPPORTED_SCHEMES or scheme == "file":
                raise ConfigError(f"--image-root {root!r}: remote roots must use a scheme "
                                  "pyarrow reads (" + ", ".join(sorted(SUPPORTED_SCHEMES -
                                                                      {"file"})) + ")")
        elif not Path(root).is_dir():
            raise ConfigError(f"--image-root {root!r} is not a local folder; give an existing "
                              "folder that the manifest's images may live in, or a URI prefix "
                              "such as s3://bucket/photos/")
    if config.dtype != "auto" and config.dtype not in limits.DTYPES:
        raise ConfigError(f"--dtype {config.dtype!r} is not one of auto, "
                          f"{', '.join(limits.DTYPES)}")
    if config.device not in limits.DEVICES:
        raise ConfigError(f"--device {config.device!r} is not one of {', '.join(limits.DEVICES)}")
    try:
        normalise_format(config.output_format)
    except ValueError as exc:
        raise ConfigError(f"--output-format: {exc}") from None
    out = Path(config.out)
    if "://" in config.out:
        raise ConfigError(f"--out {config.out!r} must be a local folder (ledgers are fsynced "
                          "files); put outputs on an object store with --store s3://...")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {config.out!r} exists and is not a folder; pick another path")
    _check_writable("--out", config.out, out / "runs")
    _check_store_flag(config.store)


def _check_store_flag(store: str | None) -> None:
    """A --store URI pyarrow cannot open is refused now, before any folder is made (opening
    it, which may reach the network, is left to the run: _open_store)."""
    if store is None:
        return
    scheme = uri_scheme(store)
    if scheme is None:
        if "://" in store:
            raise ConfigError(f"--store {store!r} is not a valid URI; give a local folder or "
                              "scheme://bucket/prefix")
        _check_writable("--store", store, Path(store).expanduser())
        return
    if scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(f"--store {store!r}: pyarrow has no filesystem for the scheme "
                          f"{scheme!r}; use a local folder or one of "
                          f"{', '.join(sorted(SUPPORTED_SCHEMES))} (e.g. s3://bucket/prefix)")


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _unwritable_reason(folder: Path) -> str | None:
    """Why nothing can be created in the existing ``folder``, or None. (As root, os.access
    allows everything but a read-only filesystem, hence the statvfs check first.)"""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    if read_only:
        return "is on a read-only filesystem"
    if not os.access(folder, os.W_OK | os.X_OK):
        return "is not writable by this user"
    return None


def _check_writable(flag: str, given: str, target: Path) -> None:
    """``target`` (a folder the run will create or write in) can be made: its nearest existing
    ancestor is a writable folder. Checked without creating anything."""
    existing = _nearest_existing(target)
    if not existing.is_dir():
        raise ConfigError(f"{flag} {given!r} cannot be created: {str(existing)!r} is a file, "
                          "not a folder; pick another path")
    reason = _unwritable_reason(existing)
    if reason:
        raise ConfigError(f"{flag} {given!r} cannot be written: the folder {str(existing)!r} "
                          f"{reason}; pick a folder on a writable disk")


def _open_store(store_root: str, given: bool) -> Store:
    """The store, opened before any run folder exists: a URI that cannot be opened (no such
    filesystem, no credentials, no network) is a config error, not a traceback mid-run."""
    try:
        store = Store(store_root)
        if not store.is_local:  # local folders were checked without writing (_check_writable)
            store.check_writable()
        return store
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        flag = "--store" if given else "the store under --out"
        raise ConfigError(f"{flag} {store_root!r} cannot be opened: {str(exc).strip()}; check "
                          "the URI and the filesystem's credentials") from None


def _params_for(run_id: str, info: ModelInfo, dtype: str):
    from pipeline.provenance import provenance_params

    def params(task: Task) -> dict[str, Any]:
        sampler = {"steps": task.steps, "guidance": task.guidance,
                   "size": list(task.size) if task.size else None, "dtype": dtype}
        if task.loras is not None:  # the key's adapter entry: report --verify recomputes the key
            sampler["lora"] = dict(task.loras.key)
        return provenance_params(run_id=run_id, row_id=task.row_id,
                                 instruction=task.instruction, seed=task.seed,
                                 model=info.spec, fingerprint=info.fingerprint,
                                 sampler=sampler, key=task.key)
    return params


def _sidecar_for(task: Task, params: dict[str, Any], data: bytes,
                 origin: dict[str, Any]) -> dict[str, Any]:
    """Store sidecar: the reports' provenance sidecar (schema, params) plus the origin."""
    from pipeline.provenance import sidecar_json

    doc = json.loads(sidecar_json(params, image_bytes=data))
    doc["origin"] = origin
    return doc


def _node_alive(node_id: str | None) -> bool:
    import ray

    if node_id is None:
        return True
    try:
        for node in ray.nodes():
            if node.get("NodeID") == node_id:
                return bool(node.get("Alive"))
    except Exception:
        return True
    return False


def _start_actors(config: RunConfig, info: ModelInfo, device: str, dtype: str, priced: list[str],
                  editor_factory: Any, faults: Sequence[Mapping[str, Any]],
                  memory_plan: str | None = None) -> list[ActorSlot]:
    import ray

    from pipeline.actors import EditorActor

    cpus, gpus = cluster_resources()
    layout = actor_layout(device, config.actors, cpus, gpus)
    remote = ray.remote(EditorActor)
    slots = []
    for i in range(layout.count):
        name = f"editor-{i}"
        handle = remote.options(
            num_cpus=layout.num_cpus, num_gpus=layout.num_gpus, max_restarts=-1,
            # one thread per batch in flight plus one, so describe() and stop() are answered
            # at once (an interrupted run records every actor's stop: its held time is billed)
            max_task_retries=0, max_concurrency=max(2, config.in_flight_per_actor) + 1,
            scheduling_strategy="SPREAD",
        ).remote(name, info.spec, device, dtype, editor_factory, list(faults),
                 layout.torch_threads, fp8=config.fp8, compile=config.compile,
                 memory_plan=memory_plan, memory=config.memory, text_phase=True,
                 expected={"fingerprint": info.fingerprint, "numerics": numerics_version(),
                           "priced_devices": priced})
        slots.append(ActorSlot(name=name, handle=handle))
    return slots


def _build_reports(run_dir: Path, progress: bool, max_review_rows: int | None = None
                   ) -> tuple[dict[str, str], str | None]:
    """Reports, contact sheets and review page (pipeline.reports); (paths, None), or ({}, why
    not): a report problem must not turn a finished run into a failure."""
    from pipeline.reports import generate_reports

    try:
        cap = {} if max_review_rows is None else {"max_review_rows": max_review_rows}
        outputs = generate_reports(run_dir, progress=progress, **cap)
    except Exception as exc:  # noqa: BLE001 - reported in the summary, the run stands
        return {}, f"{type(exc).__name__}: {exc}"
    paths = {name: str(path) for name, path in outputs.files.items()}
    if outputs.review_page is not None:
        paths["review"] = str(outputs.review_page)
    if outputs.sheets:
        paths["sheets"] = str(Path(outputs.sheets[0]).parent)
    return paths, None


class _RaySession:
    """Ray as this run uses it: joined or started on demand, shut down only if ours."""

    def __init__(self, address: str | None, num_cpus: int | None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.ours = False

    def ensure(self) -> None:
        if connect(self.address, self.num_cpus):
            self.ours = True

    def close(self) -> None:
        import ray

        if self.ours and ray.is_initialized():
            ray.shutdown()
        self.ours = False


def run_batch(config: RunConfig, *, editor_factory: Any = None,
              faults: Sequence[Mapping[str, Any]] = (),
              budget: BudgetHook | None = None) -> RunSummary:
    """Run a manifest. Raises ConfigError (before any work) for config problems.

    ``editor_factory(model, device, dtype) -> editor`` replaces KontextEditor.load in the
    actors (tests); ``faults`` are injected failures (pipeline.faults); ``budget`` is asked
    before each batch (pipeline.dispatch.BudgetHook): once it refuses, the run finishes what
    is in flight and ends ``budget-stopped`` (exit code 3)."""
    import ray

    check_flags(config)
    _frozen_pricing(config.pricing)  # a bad pricing file is a config error: before any work
    info = resolve_model_info(config.model)
    checked = check_manifest(config.manifest, image_roots=config.image_roots,
                             roots_setting=config.image_roots_setting)
    for warning in _size_warnings(checked, config.model):
        print(f"warning: {warning}", file=sys.stderr)
    session = _RaySession(config.address, config.num_cpus)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(session.close)
        if config.address is not None or ray.is_initialized():
            session.ensure()  # joining a cluster is cheap and tells which devices it has
            device = resolve_device(config.device, cluster_resources()[1])
        else:
            device = resolve_device(config.device, None)  # local: start Ray only if needed
        _check_fp8_device(config.fp8, device)
        return _run(config, info, checked, device, editor_factory, faults, session, budget,
                    cleanup)


def _check_fp8_device(fp8: bool, device: str) -> None:
    """--fp8 on a local GPU without fp8 matmuls is a config error now, not a failing actor later
    (a remote cluster's GPUs are checked by the actors when they load the model)."""
    if not fp8 or device != "cuda":
        return
    import torch

    from kontext_core.speed.fp8 import Fp8UnsupportedError, choose_backend

    if torch.cuda.is_available():
        try:
            choose_backend(torch.device("cuda"))
        except Fp8UnsupportedError as exc:
            raise ConfigError(str(exc)) from None


def _frozen_pricing(path: str | None) -> dict[str, Any]:
    """config.json's "pricing" entry (the reports read it), validated now, not at report time.
    Every run freezes its prices (the shipped pipeline/pricing.yaml when no file is given), so a
    later edit of that file does not change an old run's report or fail its --verify."""
    from pipeline.reports.pricing import PricingError, load_pricing

    try:
        return {"pricing": load_pricing(path).to_dict()}
    except PricingError as exc:
        raise ConfigError(str(exc)) from None


def _run_pricing(config_path: Path, path: str | None) -> dict[str, Any]:
    """The pricing a run is costed with: frozen by its first invocation, kept by every
    resume (the budget and report of one run price all its device time alike, and a resume
    cannot lose the price of a device type an earlier invocation used)."""
    from pipeline.reports.pricing import frozen_pricing_entry

    frozen = frozen_pricing_entry(config_path.parent)
    if frozen is None:
        return _frozen_pricing(path)
    if path is not None and _frozen_pricing(path)["pricing"] != frozen:
        print(f"note: this run keeps the prices frozen when it started ({config_path}); "
              f"{path} is not used for it (to see it priced otherwise: kontext-batch report "
              f"RUN_DIR --pricing {path})", file=sys.stderr)
    return {"pricing": dict(frozen)}


_CANNOT_CREATE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST)


def _run(config: RunConfig, info: ModelInfo, checked, device: str, editor_factory: Any,
         faults: Sequence[Mapping[str, Any]], session: _RaySession,
         budget: BudgetHook | None, cleanup: contextlib.ExitStack) -> RunSummary:
    derived = derive_settings(config, info, device)
    dtype = derived.dtype
    out = Path(config.out).resolve()
    runs_dir = out / "runs"
    store_root = config.store or str(out / "store")
    store = _open_store(store_root, config.store is not None)
    try:
        run_id, history, lock = acquire_run(
            runs_dir, base_run_id(checked.digest, derived.identity), config.run_id)
        cleanup.callback(lock.release)  # held until run_batch returns; a killed run drops it
        run_dir = runs_dir / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # the checks passed, the folder changed since (or a racing mount)
        if exc.errno not in _CANNOT_CREATE:
            raise
        raise ConfigError(f"--out {config.out!r}: cannot create {exc.filename!r} "
                          f"({exc.strerror}); pick a writable folder") from None
    settings = derived.record(config, store_root)
    manifest_abs = str(Path(checked.path).resolve())
    pricing = _run_pricing(run_dir / CONFIG_FILE, config.pricing)
    write_config_file(run_dir, ConfigDocument(
        run_id=run_id, manifest=manifest_abs, manifest_sha256=checked.digest,
        rows_total=checked.rows_total, model=info.spec, preset=info.preset,
        fingerprint=info.fingerprint, settings=settings, out=str(out), store=store_root,
        extra=pricing))
    kill_point("after-config")

    ledger = LedgerWriter(run_dir / "ledger.jsonl", run_id)
    ledger.write("run-start", manifest=manifest_abs, rows_total=checked.rows_total,
                 model=info.spec, fingerprint=info.fingerprint, settings=settings,
                 invocation=history.invocations + 1, resumed=history.exists)
    kill_point("after-run-start")
    if config.progress and (line := resume_line_from_history(history, checked.rows_total)):
        print(line, file=sys.stderr)
    outcomes = Outcomes(checked.rows_total)
    digests = SourceDigests(default_index_path(store_root), rehash=config.rehash_sources)
    status, actors_started, hashed, budget_stopped = "interrupted", 0, 0, False
    stop_reason = None
    try:
        plan_bar = RunProgress(checked.rows_total, desc="planning",
                               disable=not config.progress, counts=False)
        plan = plan_run(checked, run_id=run_id, model=derived.model, defaults=derived.defaults,
                        digests=digests, store=store, history=history, ledger=ledger,
                        outcomes=outcomes, verify_cache=config.verify_cache,
                        progress=plan_bar.row_done)
        plan_bar.close()
        _carry_row_notes(history, outcomes)
        kill_point("after-plan")
        hashed = plan.hashed_sources
        progress = RunProgress(checked.rows_total, desc="rows",
                               disable=not config.progress)
        progress.start_at(hits=plan.hits, failed=plan.failed, done=plan.done_before)
        try:
            if plan.tasks:
                actors_started, budget_stopped = _dispatch(
                    config, info, device, dtype, plan, store, ledger, outcomes, progress,
                    history, run_id, editor_factory, faults, session, budget,
                    sorted(pricing["pricing"]["device_hour"]),
                    derived.memory.name if derived.memory else None)
        except StoreFull as exc:
            stop_reason = str(exc)
            for i, state in enumerate(outcomes.status):
                if state == "not-run":
                    outcomes.reason[i] = f"not run: the run stopped because {stop_reason}"
        progress.close()
        counts = outcomes.counts()
        if stop_reason is None and plan.deferred:
            # Sources that stayed unreadable through planning's retries (I/O error, throttling):
            # the run stays resumable, so the same command retries exactly those rows.
            stop_reason = (f"{plan.deferred} source image(s) could not be read (transient errors, "
                           "retried); their rows were not run")
        if stop_reason is None:
            status = "budget-stopped" if budget_stopped else \
                "failed-rows" if counts["failed"] else "complete"
    except RunAborted as exc:
        raise ConfigError(str(exc)) from None
    finally:
        digests.close()
        try:
            # the carried columns come from the snapshot the run read, not the file now
            results = outcomes.write(run_dir / "results.parquet", checked.source())
            kill_point("after-results")
            ledger.write("run-end", status=status, counts=outcomes.counts())
        except OSError as exc:  # results.parquet on a full run folder (the ledger raises its own)
            if exc.errno not in NO_SPACE:
                raise
            raise RunFolderFull(ledger.full or run_folder_full_message(run_dir, exc)) from None
        finally:
            ledger.close()
    kill_point("after-run-end")
    reports, report_error = ({}, None)
    if config.reports:
        reports, report_error = _build_reports(run_dir, config.progress, config.max_review_rows)
    counts = outcomes.counts()
    exit_code = 3 if budget_stopped else 1 if counts["failed"] or stop_reason else 0
    return RunSummary(run_id=run_id, run_dir=run_dir, store=store_root, results=results,
                      status=status, counts=counts, exit_code=exit_code,
                      actors_started=actors_started, hashed_sources=hashed, reports=reports,
                      report_error=report_error, stop_reason=stop_reason)


def _carry_row_notes(history, outcomes: Outcomes) -> None:
    """Rows an earlier invocation of this run computed keep its truncated/notes columns."""
    for index, prev in history.rows.items():
        if prev.final == "ok" and index < outcomes.rows_total and \
                outcomes.status[index] == "done":
            outcomes.truncated[index], outcomes.notes[index] = prev.truncated, prev.notes


def _dispatch(config: RunConfig, info: ModelInfo, device: str, dtype: str, plan, store: Store,
              ledger: LedgerWriter, outcomes: Outcomes, progress: RunProgress, history,
              run_id: str, editor_factory: Any, faults: Sequence[Mapping[str, Any]],
              session: _RaySession, budget: BudgetHook | None,
              priced: Sequence[str], memory_plan: str | None = None) -> tuple[int, bool]:
    session.ensure()
    kill_point("before-dispatch")
    embeddings = _text_phase(config, info, device, dtype, plan, store, ledger)
    slots = _start_actors(config, info, device, dtype, list(priced), editor_factory, faults,
                          memory_plan)
    kill_point("after-actor-start")
    dispatcher = Dispatcher(
        slots=slots, store=store, ledger=ledger, outcomes=outcomes, progress=progress,
        settings=DispatchSettings(batch_size=config.batch_size,
                                  in_flight_per_actor=config.in_flight_per_actor,
                                  max_attempts=config.max_attempts,
                                  backoff_s=config.retry_backoff_s,
                                  max_pixels=config.max_pixels,
                                  step_cache=config.step_cache or None),
        prior_attempts={i: r.attempts for i, r in history.rows.items()},
        spent_attempts={i: r.dispatched for i, r in history.rows.items()},
        followers=plan.followers, params_for=_params_for(run_id, info, dtype),
        sidecar_for=_sidecar_for, node_alive=_node_alive, budget=budget, embeddings=embeddings,
        sources=SourceReader(store, plan.chain_sources))
    waves = ChainWaves(plan.later, plan.chain_parent, outcomes=outcomes, ledger=ledger,
                       progress=progress, followers=plan.followers,
                       prior_attempts={i: r.attempts for i, r in history.rows.items()})
    try:
        dispatcher.run(plan.tasks, next_wave=waves)
        kill_point("before-stop-actors")
    finally:
        dispatcher.stop_actors(timeout_s=10.0)
    return len(slots), dispatcher.budget_stopped


def _text_phase(config: RunConfig, info: ModelInfo, device: str, dtype: str, plan, store: Store,
                ledger: LedgerWriter):
    """Encode the run's unique instructions before any editor loads (pipeline.text_phase);
    the reader the dispatcher sends their stored embeddings with."""
    from pipeline.text_phase import EmbeddingReader, run_text_phase

    cpus, gpus = cluster_resources()
    layout = actor_layout(device, 1, cpus, gpus)
    phase = run_text_phase(model=info.spec, device=device, dtype=dtype, tasks=plan.all_tasks, store=store,
                           ledger=ledger, resources={"num_cpus": layout.num_cpus, "num_gpus": layout.num_gpus},
                           torch_threads=layout.torch_threads)
    return EmbeddingReader(store, phase.keys)


SIZE_CHECK_ROWS = 2000  # size warnings read image headers: a sample, not a million rows


def _size_warnings(checked: Any, model: str) -> list[str]:
    """Sources whose shape the model will change (squashed or reframed), from the first
    SIZE_CHECK_ROWS rows: a warning before work, not a surprise on the review page."""
    import itertools

    import kontext_core
    from pipeline.manifest_input import BadRow, iter_manifest
    from pipeline.source_sizes import size_warnings

    try:
        preset = kontext_core.resolve_model(model).preset
    except (ValueError, OSError):  # an unknown model is refused later with its own message
        return []
    rows = (row for batch in iter_manifest(checked) for row in batch
            if not isinstance(row, BadRow))
    return size_warnings(itertools.islice(rows, SIZE_CHECK_ROWS), preset)


def print_summary(summary: RunSummary, file=None, resume: str | None = None) -> None:
    """Where everything is, for the person who ran the command. ``resume``: the command that
    resumes a run that stopped early (each CLI knows its own), shown under the stop reason."""
    c = summary.counts
    lines = [
        f"run {summary.run_id}: {summary.status} — {c['done']} done, {c['cache-hit']} cache "
        f"hits, {c['failed']} failed, {c['not-run']} not run",
        f"  outputs:  {summary.store}/objects/",
        f"  results:  {summary.results}",
        f"  ledger:   {summary.run_dir / 'ledger.jsonl'}",
    ]
    if summary.reports:
        for name in ("md", "html", "json"):
            if name in summary.reports:
                lines.append(f"  report:   {summary.reports[name]}")
                break
        if "review" in summary.reports:
            lines.append(f"  review:   {summary.reports['review']}  (open in a browser)")
        if "sheets" in summary.reports:
            lines.append(f"  sheets:   {summary.reports['sheets']}")
    elif summary.report_error:
        lines.append(f"  report:   not written ({summary.report_error}); retry with "
                     f"`kontext-batch report {summary.run_dir}`")
    else:
        lines.append(f"  report:   `kontext-batch report {summary.run_dir}`")
    lines += run_summary_lines(summary.run_dir)  # failure reasons grouped, flags, cuts, notes
    if summary.stop_reason:
        lines.append(f"  stopped:  {summary.stop_reason}")
        if resume:
            lines.append(f"  resume:   {resume}")
    print("\n".join(lines), file=file or sys.stdout)


__all__ = ["DEFAULT_MODEL", "DEMO_MANIFEST", "RunConfig", "RunSummary", "check_flags",
           "print_summary", "run_batch"]
