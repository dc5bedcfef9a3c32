"""Nightly jobs: YAML job specs, one run per job per date (resumable, budget-capped),
retention, history and schedules (systemd timers, crontab). See jobs/README.md.

Public API:

- ``load_job_spec(path, check_files=True, check_model=False) -> JobSpec``; ``SpecError``
  (``.problems``: file, line, key, message); ``find_job_spec(name_or_file)``.
- ``run_job(spec, date=None, ...) -> JobRunResult`` (exit codes in jobs.runner).
- ``job_history(spec) -> (rows, totals)``; ``render_history``.
- ``systemd_units(spec)``, ``crontab_line(spec)``; ``parse_cron(text) -> Cron``.
- ``LedgerBudget``: the budget hook the dispatcher consults (``may_dispatch(n_rows)``).
- ``apply_retention`` / ``expired_runs``.
"""

from jobs.budget import LedgerBudget
from jobs.cron import Cron, CronError, parse_cron
from jobs.history import HistoryRow, job_history, render_history
from jobs.retention import apply_retention, expired_runs, job_run_dirs
from jobs.runner import JobBusy, JobError, JobRunResult, run_job
from jobs.schedule import crontab_line, systemd_units
from jobs.spec import JobSpec, SpecError, SpecProblem, find_job_spec, load_job_spec

__all__ = [
    "Cron", "CronError", "HistoryRow", "JobBusy", "JobError", "JobRunResult", "JobSpec",
    "LedgerBudget", "SpecError", "SpecProblem", "apply_retention", "crontab_line",
    "expired_runs", "find_job_spec", "job_history", "job_run_dirs", "load_job_spec",
    "parse_cron", "render_history", "run_job", "systemd_units",
]
