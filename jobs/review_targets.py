"""`kontext-batch review|publish|redo JOB --date D`: the night's run folder of a job, for
pipeline.review (which knows run folders only). Importing this module registers it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from jobs.spec import SpecError, find_job_spec, load_job_spec
from pipeline.review import runs
from pipeline.review.runs import DATE, RunNotFound, RunTarget, run_target


def job_run_target(job: str, date: str, jobs_dir: str | None = None) -> RunTarget:
    """The run of job ``job`` for ``date``: OUT/runs/<job>-<date> with OUT the spec's output."""
    if not DATE.match(date):
        raise RunNotFound(f"--date {date!r} is not a date; write it as YYYY-MM-DD")
    try:
        dt.date.fromisoformat(date)
    except ValueError:
        raise RunNotFound(f"--date {date!r} is not a calendar date; write it as YYYY-MM-DD") from None
    try:
        spec = load_job_spec(find_job_spec(job, [Path(jobs_dir)] if jobs_dir else None),
                             check_files=False)
    except SpecError as exc:
        raise RunNotFound(str(exc)) from None
    run_dir = spec.run_dir(date)
    if not (run_dir / "results.parquet").is_file():
        raise RunNotFound(f"job {spec.name} has no finished run for {date} ({run_dir} has no "
                          f"results.parquet); run it first: kontext-batch job run {job} --date {date}")
    target = run_target(run_dir)
    if spec.store and not isinstance(target.config.get("store"), str):
        target.store_root = spec.store
    return target


runs.JOB_TARGETS = job_run_target
