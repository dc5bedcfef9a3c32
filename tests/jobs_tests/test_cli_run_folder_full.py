"""The CLIs when the run folder fills up: ``kontext-batch run`` and ``kontext-batch job run``
stop with exit code 1 and a message that says where and how to resume, not a traceback.

The run itself is replaced by a function raising RunFolderFull (the unit tests of run_batch
and LedgerWriter cover how it gets raised), so these tests need no Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipeline_helpers import REPO

from jobs import cli as entry  # the installed ``kontext-batch`` (jobs.cli:main)
from pipeline.errors import RunFolderFull

MESSAGE = "the run folder /tmp/full-disk/runs/r1 is out of space (No space left on device)"
DEMO = REPO / "manifests" / "examples" / "demo"
VARIANTS = REPO / "jobs" / "examples" / "demo-variants.yaml"


def _raise_full(*args: object, **kwargs: object) -> None:
    raise RunFolderFull(MESSAGE)


def _assert_clean_stop(code: int, capsys: pytest.CaptureFixture[str], resume: str) -> None:
    captured = capsys.readouterr()
    assert code == 1, captured
    assert MESSAGE in captured.err
    assert resume in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_run_stops_with_exit_1_and_says_how_to_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # run_command imports run_batch from pipeline.runner when it runs: patch it there.
    monkeypatch.setattr("pipeline.runner.run_batch", _raise_full)
    code = entry.main(["run", "--demo", "--out", str(tmp_path / "out"), "--quiet"])
    _assert_clean_stop(code, capsys, "run the same command again to resume")


def _job_spec(tmp_path: Path) -> Path:
    spec = tmp_path / "nightly.yaml"
    spec.write_text(f"name: nightly\nbuild:\n  catalog: {DEMO / 'catalog.csv'}\n"
                    f"  variants: {VARIANTS}\nmodel: kontext-tiny\n"
                    f"output: {tmp_path / 'jobs'}\n", encoding="utf-8")
    return spec


def test_job_run_stops_with_exit_1_and_says_how_to_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = _job_spec(tmp_path)
    # _job_run imports run_job from jobs.runner when it runs: patch it there.
    monkeypatch.setattr("jobs.runner.run_job", _raise_full)
    code = entry.main(["job", "run", str(spec), "--date", "2025-01-02", "--quiet"])
    _assert_clean_stop(code, capsys, f"to resume: kontext-batch job run {spec} --date 2025-01-02")


def test_job_run_without_a_date_names_the_date_it_ran_for_in_the_resume_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("jobs.runner.run_job", _raise_full)
    monkeypatch.setattr("jobs.runner.today_for", lambda spec, now=None: "2031-05-06")
    code = entry.main(["job", "run", str(_job_spec(tmp_path)), "--quiet"])
    _assert_clean_stop(code, capsys, "--date 2031-05-06")


def _stopped_summary(tmp_path: Path):
    from pipeline.runner import RunSummary

    return RunSummary(run_id="r1", run_dir=tmp_path / "r1", store=str(tmp_path / "store"), results=None,
                      status="interrupted", counts={"done": 1, "cache-hit": 0, "failed": 0, "not-run": 3},
                      exit_code=1, reports={}, stop_reason="the output store is out of space (No space left)")


def test_a_run_stopped_early_names_the_command_that_resumes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from jobs.runner import JobRunResult

    summary = _stopped_summary(tmp_path)
    monkeypatch.setattr("pipeline.runner.run_batch", lambda *a, **k: summary)
    assert entry.main(["run", "--demo", "--out", str(tmp_path / "out"), "--quiet", "--no-report"]) == 1
    out = capsys.readouterr().out
    assert "stopped:  the output store is out of space" in out and "resume:   run the same command again" in out

    spec = _job_spec(tmp_path)
    result = JobRunResult(job="nightly", date="2031-05-06", run_id="nightly-2031-05-06", run_dir=tmp_path / "r1",
                          action="ran", status="interrupted", exit_code=1, summary=summary)
    monkeypatch.setattr("jobs.runner.run_job", lambda *a, **k: result)
    assert entry.main(["job", "run", str(spec), "--quiet"]) == 1
    assert f"resume:   kontext-batch job run {spec} --date 2031-05-06" in capsys.readouterr().out
