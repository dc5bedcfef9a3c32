"""Put a job on its schedule: a systemd service + timer, or a crontab line.

systemd (preferred): ``kontext-batch-job-<name>.service`` runs ``job run <spec>`` once;
``kontext-batch-job-<name>.timer`` fires it per the spec's cron in the spec's timezone
(OnCalendar with a timezone needs systemd >= 235), with ``Persistent=true`` so a night
missed while the machine was off runs at the next boot. cron has no such catch-up, and
only cronie (RHEL, Fedora, Arch) honours ``CRON_TZ``; Debian's cron uses the system zone.
"""

from __future__ import annotations

import os
import shlex
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from jobs.spec import JobSpec

UNIT_PREFIX = "kontext-batch-job-"


class ScheduleError(ValueError):
    """The job has no usable schedule; the message says what to add."""


@dataclass(frozen=True)
class SystemdUnits:
    service_name: str
    service: str
    timer_name: str
    timer: str


def job_command(spec: JobSpec, python: str | None = None) -> list[str]:
    """The command a scheduler runs: this interpreter (the venv's) running the jobs CLI, so
    it works without PATH and without activating the venv."""
    return [python or sys.executable, "-m", "jobs.cli", "job", "run", str(spec.path)]


def _require_schedule(spec: JobSpec) -> None:
    if spec.schedule is None:
        raise ScheduleError(f"job {spec.name} has no schedule; add to {spec.path}:\n"
                            "schedule:\n  cron: \"0 2 * * *\"\n  timezone: UTC")


def _check_one_line(what: str, text: str, fix: str) -> None:
    """ScheduleError when ``text`` holds a control character (a newline would end the unit's
    line or the crontab entry, and the rest would become a directive or a command of its
    own): such a path cannot be written there safely, whatever the quoting."""
    bad = next((ch for ch in text if unicodedata.category(ch) in ("Cc", "Zl", "Zp")), None)
    if bad is not None:
        raise ScheduleError(f"{what} {text!r} contains a control character ({bad!r}); a "
                            f"systemd unit or crontab line cannot hold it: {fix}")


def _checked_paths(spec: JobSpec, workdir: Path | None, python: str | None
                   ) -> tuple[Path, list[str]]:
    """The resolved working directory and the command, both refused (ScheduleError) when a
    control character would break out of their line."""
    workdir = (workdir or Path.cwd()).resolve()
    _check_one_line("--workdir", str(workdir), "pass a --workdir without one")
    _check_one_line("the job spec's path", str(spec.path),
                    "move or rename the spec (and its folders) so the path has none")
    command = job_command(spec, python)
    _check_one_line("the Python interpreter", command[0], "run from a venv whose path has none")
    return workdir, command


def systemd_units(spec: JobSpec, workdir: Path | None = None,
                  python: str | None = None) -> SystemdUnits:
    _require_schedule(spec)
    assert spec.schedule is not None
    name = f"{UNIT_PREFIX}{spec.name}"
    workdir, argv = _checked_paths(spec, workdir, python)
    if str(workdir).endswith(("\\", " ", "\t")):
        # WorkingDirectory= takes no quotes: a trailing backslash joins the next line, and
        # trailing blanks are stripped.
        raise ScheduleError(f"--workdir {str(workdir)!r} ends with a backslash or a blank, "
                            "which systemd's WorkingDirectory= cannot hold; pass another "
                            "--workdir")
    command = " ".join(_systemd_quote(a) for a in argv)
    service = "\n".join([
        "[Unit]",
        f"Description=kontext-batch job {spec.name} (one run per date)",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        "Type=oneshot",
        f"WorkingDirectory={str(workdir).replace('%', '%%')}",
        "Environment=HF_HUB_OFFLINE=1",
        f"ExecStart={command}",
        "# systemctl stop: SIGTERM to the driver alone, which writes results and run-end and shuts",
        "# its Ray down (resumable, exit 143); whatever is left is killed after the timeout.",
        "KillMode=mixed",
        "TimeoutStopSec=120",
        "# exit 3 = stopped at the budget cap, 1 = some rows failed: both mark the unit failed",
        "# so `systemctl --failed` shows them; see jobs/README.md for every exit code.",
        "",
    ])
    calendars = spec.schedule.cron.on_calendar(spec.schedule.timezone)
    timer = "\n".join([
        "[Unit]",
        f"Description=Schedule of kontext-batch job {spec.name} "
        f"(cron {spec.schedule.cron.text!r}, {spec.schedule.timezone})",
        "",
        "[Timer]",
        *(f"OnCalendar={c}" for c in calendars),
        "Persistent=true",
        f"Unit={name}.service",
        "",
        "[Install]",
        "WantedBy=timers.target",
        "",
    ])
    return SystemdUnits(f"{name}.service", service, f"{name}.timer", timer)


def write_systemd_units(units: SystemdUnits, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in ((units.service_name, units.service), (units.timer_name, units.timer)):
        path = folder / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written


def crontab_line(spec: JobSpec, workdir: Path | None = None, python: str | None = None,
                 log: Path | None = None) -> str:
    """``CRON_TZ=...`` plus the job's line (output appended to a log in its output folder)."""
    _require_schedule(spec)
    assert spec.schedule is not None
    workdir, argv = _checked_paths(spec, workdir, python)
    log = log or spec.output / "logs" / f"{spec.name}.log"
    _check_one_line("the job's log file", str(log), "give the spec an output: folder whose "
                                                     "path has none")
    command = " ".join(shlex.quote(a) for a in argv)
    body = (f"mkdir -p {shlex.quote(str(log.parent))} && cd {shlex.quote(str(workdir))} && "
            f"HF_HUB_OFFLINE=1 {command} >> {shlex.quote(str(log))} 2>&1")
    body = body.replace("%", "\\%")  # cron turns a bare % into a newline
    return f"CRON_TZ={spec.schedule.timezone}\n{spec.schedule.cron.text} {body}"


def _systemd_quote(arg: str) -> str:
    """Quote one ExecStart= argument by systemd's rules: double quotes with C-style escapes
    for anything but plain characters, ``%%`` for a literal % (specifiers) and ``$$`` for a
    literal $ (environment variables are expanded). Control characters are refused before."""
    if arg and all(ch.isalnum() or ch in "/._-+=:@," for ch in arg):
        return arg
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'
