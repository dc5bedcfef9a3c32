"""Run a job for one date: one run per job per date, resumable, capped, retention after.

The run id is ``<job>-<date>`` and its folder ``OUT/runs/<job>-<date>`` (OUT = the spec's
``output``). Triggering a date again:

- finished (run-end complete / failed-rows / budget-stopped): nothing is run (exit 0);
  retention (jobs.retention) runs after each finished run, whatever its status; a finished
  run without report.json (the driver died before writing it) gets its reports then;
- interrupted or killed: the same run resumes; rows already committed stay done;
- running in another process (its job.lock is held): refused (exit 4).

A built manifest is written once per date into the run folder (``manifest.parquet``) and
reused when the date resumes, so a catalog edited in between cannot shift the rows of a
half-done run.

Exit codes: the ``EXIT_*`` constants below; what each means: docs/architecture.md, section 7.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date as Date
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jobs.budget import LedgerBudget
from jobs.lock import RunLock
from jobs.retention import apply_retention
from jobs.spec import JobSpec

EXIT_OK = 0
EXIT_FAILED_ROWS = 1
EXIT_CONFIG = 2
EXIT_BUDGET = 3
EXIT_BUSY = 4
EXIT_INTERRUPTED = 130

REPORT_FILE = "report.json"  # the first file pipeline.reports writes after run-end

# run-end statuses after which the date is done and retention applies.
FINISHED_STATUSES = ("complete", "failed-rows", "budget-stopped")


class JobError(Exception):
    """A job cannot run (config-class: exit 2); the message says what to fix."""


class DateError(JobError, ValueError):
    """A date that is not YYYY-MM-DD (config-class: exit 2; still a ValueError for callers)."""


class FutureDateError(JobError):
    """A run date later than tomorrow in the job's timezone (config-class: exit 2)."""


class JobBusy(Exception):
    """Another process holds this job date's lock (exit 4)."""


@dataclass
class JobRunResult:
    job: str
    date: str
    run_id: str
    run_dir: Path
    action: str  # ran | resumed | nothing-to-do
    status: str  # complete | failed-rows | budget-stopped | interrupted
    exit_code: int
    counts: dict[str, int] = field(default_factory=dict)
    budget_stop: dict[str, Any] | None = None
    deleted: list[Path] = field(default_factory=list)
    summary: Any = None  # pipeline.runner.RunSummary when something ran
    # nothing-to-do on a date whose run ended before its reports were written (a crash
    # between run-end and report.json): the reports written now, or why they could not be.
    reports_rebuilt: dict[str, str] = field(default_factory=dict)
    report_error: str | None = None


def parse_date(text: str) -> str:
    """YYYY-MM-DD, checked; DateError (a JobError and a ValueError) saying the format
    otherwise."""
    try:
        if len(text) == 10:
            return Date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    raise DateError(f"date {text!r} is not a calendar date in the form YYYY-MM-DD "
                     "(e.g. 2026-11-27)")


def check_not_future(spec: JobSpec, date: str, today: str) -> None:
    """FutureDateError for a date after tomorrow (``today`` is the job's today): a typo such
    as 2062 for 2026 would otherwise make a run folder that never ages out, and measure
    retention from decades ahead. Tomorrow is allowed (a trigger just before midnight for the
    next night, or a clock a little off)."""
    tomorrow = (Date.fromisoformat(today) + timedelta(days=1)).isoformat()
    if date > tomorrow:
        where = f" in {spec.schedule.timezone}" if spec.schedule is not None else ""
        raise FutureDateError(
            f"job {spec.name}: date {date} is in the future (today is {today}{where}); a run "
            f"may be dated at most tomorrow ({tomorrow}); check --date for a typo")


def today_for(spec: JobSpec, now: datetime | None = None) -> str:
    """Today's date where the job is scheduled (its timezone), else on this machine."""
    now = now or datetime.now().astimezone()
    if spec.schedule is not None:
        return now.astimezone(spec.schedule.tz).date().isoformat()
    return now.date().isoformat()


def run_job(spec: JobSpec, date: str | None = None, *, editor_factory: Any = None,
            faults: Sequence[Mapping[str, Any]] = (), progress: bool = True,
            reports: bool = True, num_cpus: int | None = None,
            retry_backoff_s: float = 1.0) -> JobRunResult:
    """Run (or resume, or skip) ``spec`` for ``date`` (default: today in its timezone).

    Raises JobError (config), JobBusy (locked), pipeline ConfigError (the runner's checks)
    and KeyboardInterrupt (the run is left resumable)."""
    from pipeline.resume import ledger_end, resumable_end

    today = today_for(spec)
    date = parse_date(date) if date else today
    check_not_future(spec, date, today)
    run_id, run_dir = spec.run_id(date), spec.run_dir(date)
    lock = RunLock(run_dir)
    if not lock.acquire():
        raise JobBusy(f"job {spec.name} for {date} is already running in another process "
                      f"(lock {lock.path}); wait for it, or trigger another date")
    try:
        # Whether (and how) it ended, as the pipeline sees it: from the ledger's tail, not a
        # parse of every row.
        exists, finished_status = ledger_end(run_dir / "ledger.jsonl")
        if not resumable_end(exists, finished_status):
            _note_trigger(spec, date, run_dir, "nothing-to-do", None)
            rebuilt, report_error = ({}, None)
            if reports and not (run_dir / REPORT_FILE).exists():
                rebuilt, report_error = rebuild_reports(spec, date, run_dir, progress)
            return JobRunResult(spec.name, date, run_id, run_dir, "nothing-to-do",
                                str(finished_status), EXIT_OK,
                                counts=_result_counts(run_dir),
                                budget_stop=last_budget_stop(run_dir),
                                reports_rebuilt=rebuilt, report_error=report_error)
        action = "resumed" if exists else "ran"
        manifest, image_roots = _manifest_for(spec, run_dir)
        _note_trigger(spec, date, run_dir, action, manifest)
        summary = _run(spec, run_id, run_dir, manifest, image_roots, editor_factory, faults,
                       progress, reports, num_cpus, retry_backoff_s)
    finally:
        lock.release()
    deleted = []
    # Every finished run, not only a complete one: at scale some rows always fail (or the cap
    # stops the night), and retention that waits for a perfect night never runs while the
    # disk fills. An interrupted or crashed run is not finished; it never gets here or is
    # resumed by the next trigger.
    if summary.status in FINISHED_STATUSES:
        deleted = apply_retention(spec.runs_dir, spec.name, Date.fromisoformat(date),
                                  spec.retention, today=Date.fromisoformat(today_for(spec)))
    return JobRunResult(spec.name, date, run_id, run_dir, action, summary.status,
                        summary.exit_code, counts=dict(summary.counts),
                        budget_stop=last_budget_stop(run_dir), deleted=deleted,
                        summary=summary)


def _run(spec: JobSpec, run_id: str, run_dir: Path, manifest: Path, image_roots: list[str],
         editor_factory: Any, faults: Sequence[Mapping[str, Any]], progress: bool,
         reports: bool, num_cpus: int | None, retry_backoff_s: float) -> Any:
    from pipeline.reports.pricing import DEFAULT_PRICING_FILE, PricingError
    from pipeline.runner import run_batch

    pricing_file = spec.pricing or DEFAULT_PRICING_FILE
    budget = None
    if spec.budget is not None:
        try:
            pricing = budget_pricing(run_dir, pricing_file)
            budget = LedgerBudget(run_dir / "ledger.jsonl", spec.budget.amount,
                                  spec.budget.currency, pricing)
        except (PricingError, ValueError) as exc:
            raise JobError(f"job {spec.name}: {exc}") from None
    config = run_config(spec, run_id, manifest, image_roots, progress=progress,
                        reports=reports, num_cpus=num_cpus, retry_backoff_s=retry_backoff_s,
                        pricing_file=pricing_file)
    return run_batch(config, editor_factory=editor_factory, faults=faults, budget=budget)


def run_config(spec: JobSpec, run_id: str, manifest: Path, image_roots: list[str], *,
               progress: bool = True, reports: bool = True, num_cpus: int | None = None,
               retry_backoff_s: float = 1.0, pricing_file: str | Path | None = None) -> Any:
    """The pipeline's RunConfig for one date of ``spec`` (``job run`` and its --dry-run)."""
    from pipeline.reports.pricing import DEFAULT_PRICING_FILE
    from pipeline.run_config import RunConfig

    pricing_file = pricing_file or spec.pricing or DEFAULT_PRICING_FILE
    # sampler: and ray: keys are named as the RunConfig fields they set
    return RunConfig.from_sections(
        spec.sampler, spec.ray, manifest=str(manifest), out=str(spec.output), store=spec.store,
        model=spec.model, run_id=run_id, retry_backoff_s=retry_backoff_s, num_cpus=num_cpus,
        reports=reports, progress=progress, pricing=str(pricing_file),
        image_roots=[*spec.image_roots, *image_roots] or None,
        image_roots_setting="image_roots")  # row reasons name the spec's key, not --image-root


def rebuild_reports(spec: JobSpec, date: str, run_dir: Path, progress: bool
                    ) -> tuple[dict[str, str], str | None]:
    """Write the reports of a finished run that has none (its driver died after run-end and
    before report.json; the date is finished, so no later trigger would ever write them).
    Returns (name -> path written, None) or ({}, why not): as in the pipeline, a report
    problem does not fail the date. Says what it did on stderr."""
    import sys

    from pipeline.reports import generate_reports

    try:
        outputs = generate_reports(run_dir, progress=progress)
    except Exception as exc:  # noqa: BLE001 - reported, the finished date stays finished
        error = f"{type(exc).__name__}: {exc}"
        print(f"job {spec.name} {date}: the finished run has no report and rebuilding it "
              f"failed: {error}; retry with: kontext-batch report {run_dir}", file=sys.stderr)
        return {}, error
    paths = {name: str(path) for name, path in outputs.files.items()}
    if outputs.review_page is not None:
        paths["review"] = str(outputs.review_page)
    print(f"job {spec.name} {date}: the finished run had no report (it stopped before "
          f"writing one); rebuilt {run_dir / REPORT_FILE}", file=sys.stderr)
    return paths, None


def budget_pricing(run_dir: Path, pricing_file: str | Path) -> Any:
    """The Pricing the budget meters ``run_dir`` with: the prices frozen in its config.json by
    the run's first invocation when there are some (the pipeline and the report keep them on
    every resume, so a pricing file edited between invocations must not change the meter
    alone), else ``pricing_file``. Raises PricingError for a bad file or frozen entry."""
    from pipeline.reports.pricing import frozen_pricing_entry, load_pricing, pricing_from_mapping

    frozen = frozen_pricing_entry(run_dir)
    if frozen is not None:
        return pricing_from_mapping(frozen, origin=f"{run_dir / 'config.json'} (pricing)")
    return load_pricing(pricing_file)


def _manifest_for(spec: JobSpec, run_dir: Path, frozen: Path | None = None
                  ) -> tuple[Path, list[str]]:
    """The manifest to run, and the image folders outside its own folder it may read.
    ``frozen``: where a built manifest is written when the date has none (default: the run
    folder's manifest.parquet; a dry run builds elsewhere)."""
    if spec.manifest is not None:
        if not spec.manifest.is_file():
            raise JobError(f"job {spec.name}: manifest not found: {spec.manifest}; fix "
                           f"manifest: in {spec.path}")
        return spec.manifest, []
    from manifests import BuildError, build_manifest

    assert spec.build is not None
    if (run_dir / "manifest.parquet").is_file() or frozen is None:
        frozen = run_dir / "manifest.parquet"
    if not frozen.is_file():
        # The builder warns that the catalog's images lie outside the run folder; the run is
        # given the catalog's folder as an image root and _warn_outside names any other
        # folder, so its warning is noise here.
        builder_log = logging.getLogger("manifests.build")
        level = builder_log.level
        builder_log.setLevel(logging.ERROR)
        try:
            build_manifest(spec.build.catalog, spec.build.variants, spec.build.seeds, out=frozen)
        except BuildError as exc:
            raise JobError(f"job {spec.name} ({spec.path}): {exc}") from None
        finally:
            builder_log.setLevel(level)
        _warn_outside(spec, frozen, [catalog_root(spec.build.catalog), *spec.image_roots])
    return frozen, [catalog_root(spec.build.catalog)]


def catalog_root(catalog: Path) -> str:
    """The folder a built manifest's images may be read from without image_roots: the catalog
    folder itself, or the folder holding the CSV/Parquet catalog (its relative image paths
    resolve there). Not every folder the catalog names: a catalog row may point anywhere."""
    return os.path.realpath(catalog if catalog.is_dir() else catalog.parent)


def _warn_outside(spec: JobSpec, manifest: Path, allowed: list[str]) -> None:
    """Say once, when the date's manifest is built, which image folders the run will refuse
    (each of their rows fails alone, its reason naming image_roots)."""
    import sys

    from manifests.paths import RootSet, uri_scheme

    roots = RootSet(os.path.realpath(r) for r in allowed if uri_scheme(r) is None)
    outside = [f for f in image_folders(manifest) if f not in roots]
    if outside:
        shown = ", ".join(outside[:3]) + (f" and {len(outside) - 3} more" if len(outside) > 3
                                          else "")
        print(f"job {spec.name}: the catalog names images outside its folder ({shown}); their "
              f"rows fail unless image_roots in {spec.path} allows those folders",
              file=sys.stderr)


def image_folders(manifest: Path) -> list[str]:
    """Folders of the manifest's local images that lie outside the manifest's own folder (a
    built manifest refers to the catalog's images where they are), less folders inside
    others of them (they would allow nothing more)."""
    import pyarrow.parquet as pq
    from tqdm import tqdm

    from manifests.paths import covering_roots, is_within, uri_scheme

    base = os.path.realpath(manifest.parent)
    # Rows repeat images (variants x seeds of one product) and images share folders: resolve
    # each distinct folder once, and a file only when it is itself a link (its target's
    # folder is what the run will read), not realpath per row (12 s at a million rows).
    refs = set(pq.read_table(manifest, columns=["image"]).column("image").to_pylist())
    by_folder: dict[str, list[str]] = {}
    for ref in refs:
        if isinstance(ref, str) and uri_scheme(ref) is None and os.path.isabs(ref):
            by_folder.setdefault(os.path.dirname(ref), []).append(ref)
    folders = set()
    for folder, files in tqdm(by_folder.items(), desc="image folders", unit="folder",
                              disable=len(by_folder) < 1000, leave=False):
        folders.add(os.path.realpath(folder))
        folders.update(os.path.dirname(os.path.realpath(f)) for f in files
                       if os.path.islink(f))
    return covering_roots(f for f in folders if not is_within(f, base))


def _note_trigger(spec: JobSpec, date: str, run_dir: Path, action: str,
                  manifest: Path | None) -> None:
    """RUN_DIR/job.json: which spec made this run, and every trigger of the date."""
    path = run_dir / "job.json"
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            doc = {}
    spec_bytes = spec.path.read_bytes() if spec.path.exists() else b""
    doc.update({"job": spec.name, "date": date, "run_id": spec.run_id(date),
                "spec": str(spec.path), "spec_sha256": hashlib.sha256(spec_bytes).hexdigest()})
    if manifest is not None:
        doc["manifest"] = str(manifest)
    if spec.budget is not None:
        doc["budget"] = {"amount": spec.budget.amount, "currency": spec.budget.currency}
    doc.setdefault("triggers", []).append({"ts": time.time(), "action": action,
                                           "pid": os.getpid()})
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def last_budget_stop(run_dir: Path) -> dict[str, Any] | None:
    """The ledger's last ``budget-stop`` record (None without one), read from the end
    (``records_backwards``): a finished run costs the ledger's last block, not a parse of a
    million attempt lines."""
    from pipeline.ledger import records_backwards

    try:
        return next(records_backwards(run_dir / "ledger.jsonl", ("budget-stop",)), None)
    except FileNotFoundError:
        return None


def _result_counts(run_dir: Path) -> dict[str, int]:
    path = run_dir / "results.parquet"
    if not path.exists():
        return {}
    import pyarrow.parquet as pq

    counts: dict[str, int] = {}
    for status in pq.read_table(path, columns=["status"]).column("status").to_pylist():
        counts[status] = counts.get(status, 0) + 1
    return counts
