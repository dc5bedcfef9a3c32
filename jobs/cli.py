"""The ``kontext-batch`` entry point: ``job`` here, everything else (``run``, ``report``,
``manifest``, ``review``, ``publish``, ``redo``) handed to pipeline.cli unchanged.

    kontext-batch job run NAME|FILE [--date YYYY-MM-DD] [--dry-run]
    kontext-batch job history NAME|FILE [--json]
    kontext-batch job schedule NAME|FILE [--crontab | --print] [--dir DIR]
    kontext-batch job validate NAME|FILE

Exit codes of ``job run`` (0, 1, 2, 3 budget cap, 4 date running elsewhere, 130/143) are in
``JOB_RUN_DESCRIPTION`` for --help, and in full in docs/architecture.md, section 7.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path

import jobs.review_targets  # noqa: E402,F401  (review/publish/redo JOB --date D)

JOB_COMMANDS = ("job",)  # `manifest` (validate, build) is pipeline.cli's, as `run` is

JOB_RUN_DESCRIPTION = """\
Run a job for one date (default: today in the schedule's timezone, or the machine's local
date when the job has no schedule). The run id is <job>-<date>
and its folder OUT/runs/<job>-<date> (OUT = the spec's output). Triggering a date again
does nothing when it finished, and resumes it when it was interrupted or killed. With a
budget, no new batch starts once the next would push the run's device cost past the cap;
batches in flight finish and commit, the other rows are recorded as not-run ("budget cap
reached"), the ledger gets a budget-stop record and the exit code is 3. After a finished run
(complete, failed-rows or budget-stopped), run folders older than the retention are deleted
(never store objects). A date after tomorrow (in the job's timezone) is refused as a typo.

Exit codes: 0 ok or nothing to do, 1 finished with failed rows, 2 config error (spec,
catalog, manifest, model, cluster), 3 stopped at the budget cap, 4 the date is already
running in another process, 130 interrupted, 143 terminated by SIGTERM (trigger again to
resume)."""


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cli_parser import HintingParser

    parser = HintingParser(
        prog="kontext-batch", description="Nightly jobs for kontext-batch "
                                          "(`kontext-batch --help` lists every command).")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=HintingParser)
    _add_job(commands)
    return parser


def _add_job(commands) -> None:
    job = commands.add_parser("job", help="nightly jobs: run, history, schedule, validate")
    sub = job.add_subparsers(dest="job_command", metavar="SUBCOMMAND", required=True)

    def spec_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("job", metavar="NAME|FILE",
                       help="a job spec file, or a job name looked up in --jobs-dir, "
                            "$KONTEXT_BATCH_JOBS_DIR, the current folder, ./jobs, "
                            "./jobs/examples")
        p.add_argument("--jobs-dir", metavar="DIR", help="folder of job specs to search")

    run = sub.add_parser("run", help="run (or resume) the job for a date",
                         description=JOB_RUN_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    spec_arg(run)
    run.add_argument("--date", metavar="YYYY-MM-DD",
                     help="the date to run (default: today in the schedule's timezone; the "
                          "machine's date without a schedule)")
    run.add_argument("--no-report", action="store_true",
                     help="skip the report, contact sheets and review page")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--dry-run", action="store_true",
                     help="print the plan (rows, cache hits, rows to generate, estimated cost) "
                          "and stop: no model is loaded, nothing is written")
    run.set_defaults(func=_job_run)

    history = sub.add_parser("history", help="the job's runs: date, status, images, hits, "
                                              "failures, cost")
    spec_arg(history)
    history.add_argument("--json", action="store_true", help="print JSON instead of a table")
    history.set_defaults(func=_job_history)

    schedule = sub.add_parser(
        "schedule", help="write a systemd service + timer (or print a crontab line)",
        description="Write kontext-batch-job-<name>.service and .timer (Persistent=true: a "
                    "night missed while the machine was off runs at boot) into --dir, or "
                    "print them (--print), or print a crontab line (--crontab).")
    spec_arg(schedule)
    how = schedule.add_mutually_exclusive_group()
    how.add_argument("--crontab", action="store_true", help="print a crontab line instead")
    how.add_argument("--print", dest="print_units", action="store_true",
                     help="print the systemd units instead of writing them")
    schedule.add_argument("--dir", metavar="DIR",
                          help="where to write the units (default ~/.config/systemd/user)")
    schedule.add_argument("--workdir", metavar="DIR",
                          help="working directory of the scheduled run (default: here)")
    schedule.set_defaults(func=_job_schedule)

    validate = sub.add_parser("validate", help="check a job spec (files, model, schedule)")
    spec_arg(validate)
    validate.set_defaults(func=_job_validate)


# ----------------------------------------------------------------------------- commands


def _load(args: argparse.Namespace, **checks: bool):
    from jobs.spec import find_job_spec, load_job_spec

    dirs = [Path(args.jobs_dir)] if args.jobs_dir else None
    return load_job_spec(find_job_spec(args.job, dirs), **checks)


def _job_run(args: argparse.Namespace) -> int:
    from jobs.runner import (
        EXIT_BUSY,
        EXIT_CONFIG,
        JobBusy,
        JobError,
        parse_date,
        run_job,
        today_for,
    )
    from jobs.spec import SpecError
    from pipeline.cli import Terminated, sigterm_as_interrupt
    from pipeline.cluster import ray_output
    from pipeline.errors import ConfigError, RunFolderFull
    from pipeline.runner import print_summary

    date = None
    terminated = Terminated()
    try:
        # Configuration, checked before any work: each problem is a typed error (exit 2).
        date = parse_date(args.date) if args.date else None
        spec = _load(args, check_files=True, check_model=True)
        _warn_budget_below_load(spec, "job run")
        date = date or today_for(spec)  # fixed now, so a resume hint names the date that ran
        if args.dry_run:
            return _job_dry_run(spec, date)
        faults = _faults_from_env()
        # SIGTERM (systemctl stop, a scheduler's timeout) stops the run as Ctrl-C does: resumable
        with sigterm_as_interrupt() as terminated, ray_output(quiet=args.quiet):
            result = run_job(spec, date, faults=faults, progress=not args.quiet,
                             reports=not args.no_report)
    # Not ValueError: one raised once the run is under way is a bug or a data error, not a
    # config problem (exit 2 tells a scheduler the spec is wrong). It propagates (traceback,
    # exit 1) as in `kontext-batch run`, and the date stays resumable.
    except (SpecError, JobError, ConfigError) as exc:
        print(f"kontext-batch job run: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except JobBusy as exc:
        print(f"kontext-batch job run: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except RunFolderFull as exc:
        print(f"kontext-batch job run: stopped: {exc}; trigger the same date again to resume: "
              f"kontext-batch job run {args.job} --date {date}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        how = "terminated (SIGTERM)" if terminated.received else "interrupted"
        print(f"kontext-batch job run: {how}; trigger the same date again to resume"
              + (f": kontext-batch job run {args.job} --date {date}" if date else ""), file=sys.stderr)
        return 128 + signal.SIGTERM if terminated.received else 130
    if result.action == "nothing-to-do":
        counts = ", ".join(f"{v} {k}" for k, v in sorted(result.counts.items()))
        print(f"job {result.job} {result.date}: already finished ({result.status}"
              f"{'; ' + counts if counts else ''}); nothing to do\n  run folder: "
              f"{result.run_dir}")
        return result.exit_code
    print(f"job {result.job} {result.date}: {result.action} as {result.run_id}")
    print_summary(result.summary, resume=f"kontext-batch job run {args.job} --date {result.date}")
    stop = result.budget_stop
    if result.status == "budget-stopped" and stop:
        from jobs.budget_notice import budget_stop_line

        print(budget_stop_line(stop))
    for path in result.deleted:
        print(f"  retention: deleted {path}")
    return result.exit_code


def _job_dry_run(spec, date: str) -> int:
    """The date's plan on stdout; exit 0 (config errors propagate to _job_run: exit 2)."""
    from jobs.dry_run import dry_run_job

    print(dry_run_job(spec, date).report())
    return 0


def _faults_from_env() -> list:
    """Fault injection for tests ($KONTEXT_BATCH_FAULTS); a bad value is a config error."""
    from jobs.runner import JobError
    from pipeline.faults import ENV_VAR, faults_from_env

    try:
        return faults_from_env()
    except ValueError as exc:  # json's errors too
        raise JobError(f"${ENV_VAR} is not usable ({exc}); it is for fault-injection tests "
                       "only: unset it") from None


def _job_history(args: argparse.Namespace) -> int:
    from jobs.history import job_history, render_history
    from jobs.spec import SpecError

    try:
        spec = _load(args, check_files=False)
    except SpecError as exc:
        print(f"kontext-batch job history: {exc}", file=sys.stderr)
        return 2
    rows, totals = job_history(spec)
    if args.json:
        doc = {"job": spec.name, "runs": [r.to_dict() for r in rows],
               "totals": None if totals is None else
               {"rows": totals["rows"], "cost": totals["cost"]}}
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render_history(spec, rows, totals))
    return 0


def _job_schedule(args: argparse.Namespace) -> int:
    from jobs.schedule import (
        ScheduleError,
        crontab_line,
        systemd_units,
        write_systemd_units,
    )
    from jobs.spec import SpecError

    try:
        spec = _load(args, check_files=False)
        workdir = Path(args.workdir) if args.workdir else None
        if args.crontab:
            print(crontab_line(spec, workdir))
            print("# add with `crontab -e`; CRON_TZ needs cronie, and cron does not catch up a "
                  "missed night (the systemd timer does)", file=sys.stderr)
            _warn_dst_gap(spec)  # cron skips the same nights
            return 0
        units = systemd_units(spec, workdir)
    except (SpecError, ScheduleError) as exc:
        print(f"kontext-batch job schedule: {exc}", file=sys.stderr)
        return 2
    if args.print_units:
        print(f"# {units.service_name}\n{units.service}\n# {units.timer_name}\n{units.timer}")
        _warn_dst_gap(spec)
        return 0
    user_dir = Path.home() / ".config" / "systemd" / "user"
    folder = Path(args.dir).expanduser() if args.dir else user_dir
    for path in write_systemd_units(units, folder):
        print(f"wrote {path}")
    user = "--user " if folder.resolve() == user_dir.resolve() else ""
    print(f"enable with:\n  systemctl {user}daemon-reload\n  systemctl {user}enable --now "
          f"{units.timer_name}\n  systemctl {user}list-timers {units.timer_name}")
    if user:
        print("  loginctl enable-linger $USER   # so user timers fire while you are logged out")
    assert spec.schedule is not None
    _warn_dst_gap(spec)
    tz = spec.schedule.tz
    moment = datetime.now(tz)
    upcoming = []
    for _ in range(3):
        moment = spec.schedule.cron.next_after(moment, tz)
        upcoming.append(moment.isoformat(timespec="minutes"))
    print(f"next runs ({spec.schedule.timezone}): {', '.join(upcoming)}")
    return 0


def _warn_budget_below_load(spec, command: str) -> None:
    """Say so before any work when the cap cannot cover one model load (it will be overshot)."""
    from jobs.budget_notice import budget_load_warning

    warning = budget_load_warning(spec)
    if warning:
        print(f"kontext-batch {command}: {warning}", file=sys.stderr)


def _warn_source_sizes(spec) -> None:
    """Name the manifest's sources the model will squash (flagged 'reframed' after the run)."""
    from pipeline.errors import ConfigError
    from pipeline.manifest_input import check_manifest
    from pipeline.source_sizes import manifest_size_warnings

    if spec.manifest is None:  # built at run time: its rows do not exist yet
        return
    try:
        checked = check_manifest(str(spec.manifest), image_roots=spec.image_roots,
                                 roots_setting="image_roots")
        warnings = manifest_size_warnings(checked, spec.model)
    except (ConfigError, KeyError, OSError, ValueError):  # validation named those already
        return
    for warning in warnings:
        print(f"kontext-batch job validate: warning: {warning}", file=sys.stderr)


def _warn_dst_gap(spec) -> None:
    """Say so when the schedule's time does not exist on some night of the coming year."""
    from jobs.cron import dst_gap_warning

    if spec.schedule is None:
        return
    warning = dst_gap_warning(spec.schedule.cron, spec.schedule.timezone, spec.schedule.tz,
                              datetime.now(spec.schedule.tz).date())
    if warning:
        print(warning, file=sys.stderr)


def _job_validate(args: argparse.Namespace) -> int:
    from jobs.spec import SpecError
    from manifests.build import check_build_inputs
    from manifests.problems import BuildError

    try:
        spec = _load(args, check_files=True, check_model=True)
        if spec.build is not None:  # load and cross-check them, as job run's build would
            check_build_inputs(spec.build.catalog, spec.build.variants)
    except (SpecError, BuildError) as exc:
        print(f"kontext-batch job validate: {exc}", file=sys.stderr)
        return 2
    _warn_dst_gap(spec)
    _warn_budget_below_load(spec, "job validate")
    _warn_source_sizes(spec)
    source = f"manifest {spec.manifest}" if spec.manifest else \
        f"build {spec.build.catalog} × {spec.build.variants}"  # type: ignore[union-attr]
    print(f"job spec {spec.path}: ok (job {spec.name}; {source}; model {spec.model}; "
          f"output {spec.output})")
    return 0


# ----------------------------------------------------------------------------- entry point


def _top_level_help() -> str:
    from pipeline import cli as pipeline_cli

    text = pipeline_cli.build_parser().format_help()
    return text + (
        "\nnightly jobs and manifests:\n"
        "  job run             run or resume a job for a date (kontext-batch job run -h)\n"
        "  job history         a job's runs with images, hits, failures, cost\n"
        "  job schedule        systemd timer (or crontab line) for a job\n"
        "  job validate        check a job spec\n")


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``job`` here, anything else to pipeline.cli.main."""
    argv = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    command = next((a for a in argv if not a.startswith("-")), None)
    if command in JOB_COMMANDS:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    if command is None and any(a in ("-h", "--help") for a in argv):
        print(_top_level_help(), end="")
        return 0
    from pipeline import cli as pipeline_cli

    return int(pipeline_cli.main(argv))


if __name__ == "__main__":
    sys.exit(main())
