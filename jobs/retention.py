"""Which run folders of a job to keep, and deleting the others.

Runs of job NAME are the folders ``OUT/runs/NAME-YYYY-MM-DD``. After a run finishes
(complete, failed-rows or budget-stopped), ``apply_retention`` deletes the job's older run folders that no rule keeps:

- ``keep_runs: N`` keeps the N newest dates that hold a run (a ledger; the current run
  counts as one); a folder without one (a night refused on its config leaves job.lock and
  job.json) is kept only when it is newer than the oldest run kept;
- ``keep_days: D`` keeps dates less than D days before the current run's date (before
  today, if the current run is dated later than today);
- with both, a folder survives if either rule keeps it (nothing is deleted by surprise).

Never deleted: the current run, runs dated after it (a back-fill must not delete the
present), and a run another process is working on (its job.lock or the pipeline's .lock is
held). Only run folders
are deleted, never objects in the content-addressed store: an output can be shared by many
runs (cache hits point at the object an earlier run committed), so removing store objects
safely would need reference counting across every run and job sharing the store. Reclaim
store space separately (e.g. delete objects no kept run's results.parquet mentions).
"""

from __future__ import annotations

import re
import shutil
from datetime import date, timedelta
from pathlib import Path

from jobs.lock import RunLock
from jobs.spec import Retention
from pipeline.runlock import LOCK_NAME as PIPELINE_LOCK

DATE_PATTERN = r"\d{4}-\d{2}-\d{2}"
LEDGER_NAME = "ledger.jsonl"


def job_run_dirs(runs_dir: Path, job: str) -> list[tuple[date, Path]]:
    """(date, folder) of every run of ``job`` under ``runs_dir``, oldest first."""
    if not runs_dir.is_dir():
        return []
    pattern = re.compile(rf"^{re.escape(job)}-({DATE_PATTERN})$")
    found = []
    for child in runs_dir.iterdir():
        match = pattern.match(child.name)
        if not match or not child.is_dir():
            continue
        try:
            found.append((date.fromisoformat(match.group(1)), child))
        except ValueError:
            continue
    return sorted(found)


def has_run(folder: Path) -> bool:
    """Whether a run folder holds a run (its ledger), not only what a refused trigger left."""
    return (folder / LEDGER_NAME).exists()


def expired_runs(runs: list[tuple[date, Path]], current: date, rule: Retention,
                 today: date | None = None) -> list[Path]:
    """The folders no retention rule keeps (decides, deletes nothing; looks only at whether
    each folder holds a ledger).

    ``keep_days`` ages are measured from ``current``, or from ``today`` when ``current`` lies
    after it: a mistyped future date (2062 for 2026) must not make every real run look
    decades old."""
    if not rule.enabled:
        return []
    age_from = min(current, today) if today is not None else current
    older = [(d, p) for d, p in runs if d < current]
    kept_by_count: set[Path] = set()
    oldest_kept: date | None = None
    if rule.keep_runs is not None:
        # Only folders that hold a run count: a night that failed on its config leaves a
        # folder with just job.lock (and job.json), which must not push a real run out.
        newest_first = sorted(((d, p) for d, p in older if has_run(p)), reverse=True)
        kept = newest_first[:max(0, rule.keep_runs - 1)]
        kept_by_count = {p for _, p in kept}
        oldest_kept = kept[-1][0] if kept else None
    cutoff = _days_before(age_from, rule.keep_days) if rule.keep_days is not None else None
    expired = []
    for d, p in older:
        # A folder without a run survives the count only between the kept runs.
        keep_count = rule.keep_runs is not None and (
            p in kept_by_count or (not has_run(p) and oldest_kept is not None
                                   and d > oldest_kept))
        keep_days = rule.keep_days is not None and (cutoff is None or d > cutoff)
        if not keep_count and not keep_days:
            expired.append(p)
    return expired


def _days_before(day: date, days: int) -> date | None:
    """``day`` less ``days`` days; None when that lies before the first representable date
    (every date is then within ``keep_days``): a huge value keeps all, it does not crash."""
    if days > (day - date.min).days:
        return None
    return day - timedelta(days=days)


def apply_retention(runs_dir: Path, job: str, current: date, rule: Retention,
                    today: date | None = None) -> list[Path]:
    """Delete the job's expired run folders; returns those deleted. ``today`` (default: this
    machine's date; the job runner passes the date in the job's timezone) caps the date ages
    are measured from (see ``expired_runs``)."""
    deleted = []
    today = today or date.today()
    for path in expired_runs(job_run_dirs(runs_dir, job), current, rule, today):
        lock = RunLock(path)
        if not lock.acquire():
            continue  # someone is (re)running that date right now
        try:
            if RunLock(path, PIPELINE_LOCK).held_elsewhere():
                continue  # a plain `kontext-batch run --run-id` is using the folder
            shutil.rmtree(path)
        finally:
            lock.release()
        deleted.append(path)
    return deleted
