"""`kontext-batch job run` exit codes: 2 only for configuration problems found before any work
(bad --date, spec, fault-injection variable, the pipeline's pre-work checks); a ValueError raised
once the run is under way is a bug or a data error and propagates (traceback, exit 1), as in
`kontext-batch run`, rather than telling a scheduler the spec is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import REPO

import pipeline.runner
from jobs import cli
from jobs.spec import load_job_spec
from pipeline.errors import ConfigError

DATE = "2026-11-27"


def write_job(folder: Path) -> Path:
    """A job over an existing manifest file (never read: run_batch is replaced in these tests)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.parquet").write_bytes(b"replaced run_batch never reads it")
    spec = folder / "job.yaml"
    spec.write_text(textwrap.dedent("""
        name: exit-codes
        manifest: m.parquet
        model: kontext-tiny
        output: out
        """).lstrip("\n"))
    return spec


def run_cli(spec: Path, *extra: str) -> int:
    return cli.main(["job", "run", str(spec), "--quiet", "--no-report", *extra])


@pytest.fixture(autouse=True)
def no_faults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KONTEXT_BATCH_FAULTS", raising=False)


@pytest.mark.parametrize("bad", ["2026-13-01", "2026-02-30", "27.11.2026", "20261127"])
def test_a_bad_date_is_a_config_error(tmp_path: Path, capsys, bad: str) -> None:
    spec = write_job(tmp_path)
    assert run_cli(spec, "--date", bad) == 2
    err = capsys.readouterr().err
    assert f"kontext-batch job run: date {bad!r} is not a calendar date in the form " \
           "YYYY-MM-DD" in err
    assert not (tmp_path / "out").exists()  # nothing started


def test_a_spec_error_is_a_config_error(tmp_path: Path, capsys) -> None:
    spec = write_job(tmp_path)
    spec.write_text(spec.read_text().replace("manifest: m.parquet", "manifest: missing.parquet"))
    assert run_cli(spec, "--date", DATE) == 2
    err = capsys.readouterr().err
    assert err.startswith("kontext-batch job run: ") and "missing.parquet" in err
    assert "file not found" in err
    assert run_cli(tmp_path / "no-such-job.yaml", "--date", DATE) == 2
    assert "kontext-batch job run: " in capsys.readouterr().err


@pytest.mark.parametrize("value", ["not json", '{"kind": "exit"}', '[{"kind": "meteor"}]'])
def test_a_bad_fault_variable_is_a_config_error_before_work(tmp_path: Path, capsys, monkeypatch,
                                                             value: str) -> None:
    spec = write_job(tmp_path)
    monkeypatch.setenv("KONTEXT_BATCH_FAULTS", value)
    assert run_cli(spec, "--date", DATE) == 2
    err = capsys.readouterr().err
    assert "kontext-batch job run: $KONTEXT_BATCH_FAULTS is not usable" in err
    assert "unset it" in err
    assert not (tmp_path / "out").exists()


def test_the_pipelines_pre_work_config_error_is_still_exit_2(tmp_path: Path, capsys,
                                                             monkeypatch) -> None:
    def run_batch(config: Any, **kwargs: Any) -> Any:
        raise ConfigError("--address ray://nowhere:10001: no Ray cluster answers there")

    monkeypatch.setattr(pipeline.runner, "run_batch", run_batch)
    assert run_cli(write_job(tmp_path), "--date", DATE) == 2
    assert "kontext-batch job run: --address ray://nowhere:10001: no Ray cluster" in \
        capsys.readouterr().err


def test_a_value_error_mid_run_propagates_instead_of_exit_2(tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    spec_path = write_job(tmp_path)
    calls: list[str] = []

    def run_batch(config: Any, **kwargs: Any) -> Any:
        calls.append(config.run_id)
        raise ValueError("row 7: could not convert string to float: 'n/a'")

    monkeypatch.setattr(pipeline.runner, "run_batch", run_batch)
    with pytest.raises(ValueError, match="row 7: could not convert"):
        run_cli(spec_path, "--date", DATE)
    assert calls == [f"exit-codes-{DATE}"]  # the run had started: past every pre-work check
    assert "kontext-batch job run:" not in capsys.readouterr().err
    # The lock was released: the date can be triggered again (resumed).
    run_dir = load_job_spec(spec_path).run_dir(DATE)
    triggers = json.loads((run_dir / "job.json").read_text())["triggers"]
    assert [t["action"] for t in triggers] == ["ran"]
    with pytest.raises(ValueError, match="row 7"):
        run_cli(spec_path, "--date", DATE)
    assert len(calls) == 2


def test_the_command_exits_1_with_a_traceback_on_a_mid_run_value_error(tmp_path: Path) -> None:
    """The process as a scheduler sees it: exit status 1, not 2, and the traceback."""
    spec = write_job(tmp_path)
    script = textwrap.dedent(f"""
        import sys
        import pipeline.runner
        from jobs import cli

        def run_batch(config, **kwargs):
            raise ValueError("row 7: could not convert string to float: 'n/a'")

        pipeline.runner.run_batch = run_batch
        sys.exit(cli.main(["job", "run", {str(spec)!r}, "--date", "{DATE}", "--quiet",
                           "--no-report"]))
        """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("KONTEXT_BATCH_FAULTS", None)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" in proc.stderr
    assert "ValueError: row 7: could not convert string to float" in proc.stderr
    assert "kontext-batch job run:" not in proc.stderr
