"""SIGTERM (systemctl stop, a scheduler's timeout) stops `kontext-batch job run` the way Ctrl-C
does: the run's cleanup finishes, the CLI names the date to trigger again and exits 143."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import sigterm_self_mid_call

import jobs.runner
from jobs import cli as job_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "demo-nightly.yaml"


def test_sigterm_during_a_job_run_cleans_up_and_exits_143(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    events: list[str] = []

    def run_job(spec: Any, date: str, **kwargs: Any) -> Any:
        sigterm_self_mid_call(events)

    monkeypatch.setattr(jobs.runner, "run_job", run_job)
    before = signal.getsignal(signal.SIGTERM)
    code = job_cli.main(["job", "run", str(EXAMPLE), "--date", "2026-11-28", "--quiet"])
    assert code == 143 and events == ["cleanup finished"]
    err = capsys.readouterr().err
    assert "terminated (SIGTERM); trigger the same date again to resume" in err
    assert "--date 2026-11-28" in err
    assert signal.getsignal(signal.SIGTERM) == before
