"""`job schedule`: a control character in --workdir or the spec's path is refused (exit 2)
instead of becoming a directive of the unit or a line of the crontab, ExecStart= quotes $
and %; --print and --crontab warn about nights the clocks skip."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from jobs import cli
from jobs.schedule import ScheduleError, _systemd_quote, systemd_units
from jobs.spec import load_job_spec

SPEC = """
name: nightly
manifest: m.parquet
model: kontext-tiny
output: out
schedule:
  cron: "{cron}"
  timezone: {tz}
"""
INJECTED = "x\nExecStartPre=touch pwned"


def write(folder: Path, cron: str = "0 3 * * *", tz: str = "UTC") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.parquet").write_bytes(b"not read by validation")
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent(SPEC.format(cron=cron, tz=tz)).lstrip("\n"))
    return path


@pytest.mark.parametrize("how", ["--print", "--crontab"])
def test_a_newline_in_workdir_is_refused(tmp_path: Path, capsys, how: str) -> None:
    spec = write(tmp_path / "spec")
    workdir = tmp_path / INJECTED
    workdir.mkdir()
    assert cli.main(["job", "schedule", str(spec), how, "--workdir", str(workdir)]) == 2
    out, err = capsys.readouterr()
    assert "ExecStartPre" not in out and "pwned" not in out
    assert "kontext-batch job schedule: --workdir" in err
    assert "contains a control character ('\\n')" in err and "Traceback" not in err


@pytest.mark.parametrize("how", ["--print", "--crontab"])
def test_a_newline_in_the_spec_path_is_refused(tmp_path: Path, capsys, how: str) -> None:
    spec = write(tmp_path / INJECTED)
    assert cli.main(["job", "schedule", str(spec), how, "--workdir", str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "the job spec's path" in err and "control character ('\\n')" in err


def test_written_units_are_refused_too(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path / "s\rx")
    units = tmp_path / "units"
    assert cli.main(["job", "schedule", str(spec), "--dir", str(units),
                     "--workdir", str(tmp_path)]) == 2
    assert not units.exists()
    assert "control character ('\\r')" in capsys.readouterr().err


def test_a_workdir_systemd_cannot_hold_is_refused(tmp_path: Path) -> None:
    spec = load_job_spec(write(tmp_path / "spec"), check_files=False)
    for name in ("ends-in-backslash\\", "ends-in-blank "):
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(ScheduleError, match="WorkingDirectory= cannot hold"):
            systemd_units(spec, folder)


def test_spaces_dollars_and_percents_are_quoted_for_execstart(tmp_path: Path) -> None:
    spec = load_job_spec(write(tmp_path / "my $HOME 100%"), check_files=False)
    service = systemd_units(spec, tmp_path, python="/usr/bin/python3").service
    exec_line = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    assert exec_line == (f'ExecStart=/usr/bin/python3 -m jobs.cli job run '
                         f'"{tmp_path}/my $$HOME 100%%/job.yaml"')
    assert _systemd_quote('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.parametrize("how", ["--print", "--crontab"])
def test_print_and_crontab_warn_about_a_night_the_clocks_skip(tmp_path: Path, capsys,
                                                              how: str) -> None:
    spec = write(tmp_path / "spec", cron="30 2 * * *", tz="Europe/Berlin")
    assert cli.main(["job", "schedule", str(spec), how, "--workdir", str(tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert "warning: cron '30 2 * * *' fires at a time that does not exist in Europe/Berlin" \
        in err
    assert "warning" not in out


def test_no_warning_for_a_time_that_always_exists(tmp_path: Path, capsys) -> None:
    spec = write(tmp_path / "spec", cron="0 3 * * *", tz="Europe/Berlin")
    assert cli.main(["job", "schedule", str(spec), "--print", "--workdir", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().err
