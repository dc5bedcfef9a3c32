"""A job NAME is found in the current folder too, so `job history NAME` works from the spec's
own folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import cli
from jobs.spec import find_job_spec

SPEC = """\
name: {name}
manifest: m.parquet
model: kontext-tiny
output: out
"""


def write(folder: Path, file_name: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(SPEC.format(name=name))
    return path


def test_history_from_the_specs_own_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    spec = write(tmp_path / "specs", "nightly.yaml", "nightly")
    monkeypatch.chdir(spec.parent)
    assert cli.main(["job", "history", "nightly", "--json"]) == 0
    assert '"job": "nightly"' in capsys.readouterr().out


def test_a_declared_name_is_found_in_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    spec = write(tmp_path / "specs", "whatever.yaml", "catalog-refresh")
    monkeypatch.chdir(spec.parent)
    assert find_job_spec("catalog-refresh") == spec.resolve()


def test_jobs_dir_wins_over_the_current_folder(tmp_path: Path, monkeypatch) -> None:
    here = write(tmp_path / "here", "nightly.yaml", "nightly")
    there = write(tmp_path / "there", "nightly.yaml", "nightly")
    monkeypatch.chdir(here.parent)
    monkeypatch.setenv("KONTEXT_BATCH_JOBS_DIR", str(there.parent))
    assert find_job_spec("nightly") == there.resolve()


def test_an_unknown_name_names_the_current_folder_among_those_searched(
        tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["job", "history", "nope"]) == 2
    err = capsys.readouterr().err
    assert f"no job named 'nope' in {tmp_path.resolve()}" in err


@pytest.fixture(autouse=True)
def _no_env_leak(monkeypatch) -> None:
    monkeypatch.delenv("KONTEXT_BATCH_JOBS_DIR", raising=False)
