"""SIGTERM (``kill``, ``systemctl stop``) stops ``kontext-batch run`` the way Ctrl-C does: the
run's cleanup writes results.parquet and a run-end record ("interrupted"), the CLI says how to
resume and exits 143, and the same command resumes the same run.

The first tests replace the run with a function (no Ray); the last runs the real CLI with a
local Ray in a child process and sends it SIGTERM mid-run."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import (
    cli_run_process,
    make_manifest,
    ok_counts,
    ok_lines,
    read_records,
    sigterm_self_mid_call,
    wait_for,
)

from pipeline import cli

RESUME = "kontext-batch run: terminated (SIGTERM); run the same command again to resume"


def _ray_init_replacing_sigterm(*args: Any, **kwargs: Any) -> None:
    """What starting a local Ray does to SIGTERM (ray.init's node handler: exit 1)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))


def _fake_run(events: list[str], *, ray_starts: bool = False, second_sigterm: bool = False):
    """A run_batch that gets SIGTERM mid-run (after starting Ray when ``ray_starts``); its
    cleanup (like the runner's finally) records that it ran to the end."""

    def run_batch(config: Any, **kwargs: Any) -> Any:
        if ray_starts:
            from pipeline.cluster import connect

            connect(None)  # as the runner starts its local Ray
        sigterm_self_mid_call(events, second_sigterm)

    return run_batch


@pytest.mark.parametrize("ray_starts, second_sigterm", [
    (False, False), (True, False), (False, True)])
def test_sigterm_mid_run_runs_the_cleanup_and_exits_143(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        ray_starts: bool, second_sigterm: bool) -> None:
    import ray

    events: list[str] = []
    original_init = ray.init
    monkeypatch.setattr("pipeline.cluster.start_local", _ray_init_replacing_sigterm)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_COLOR_PREFIX", "0")  # connect() would set it for good
    monkeypatch.setattr("pipeline.runner.run_batch",
                        _fake_run(events, ray_starts=ray_starts, second_sigterm=second_sigterm))
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["run", "--demo", "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 143, captured
    assert events == ["cleanup finished"]
    assert RESUME in captured.err and "Traceback" not in captured.err
    assert signal.getsignal(signal.SIGTERM) is before  # restored after the run
    assert ray.init is original_init  # Ray itself is never patched


def test_ctrl_c_still_exits_130_and_the_handler_is_restored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(config: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr("pipeline.runner.run_batch", interrupted)
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["run", "--demo", "--out", str(tmp_path / "out"), "--quiet"])
    captured = capsys.readouterr()
    assert code == 130
    assert "interrupted; run the same command again to resume" in captured.err
    assert "SIGTERM" not in captured.err
    assert signal.getsignal(signal.SIGTERM) is before


# -- the real CLI, a local Ray, SIGTERM mid-run ---------------------------------------------------




def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sigterm_mid_run_writes_results_and_the_same_command_resumes(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=4, variants=2)  # 8 rows, 4 batches
    ids = pq.read_table(manifest, columns=["row_id"]).column("row_id").to_pylist()
    slow = [{"kind": "sleep", "row_id": rid, "seconds": 1.5,
             "marker_dir": str(tmp_path / "faults")} for rid in ids]
    out = tmp_path / "out"
    first = cli_run_process(manifest, out, slow, tmp_prefix="kbterm")
    try:
        wait_for(lambda: ok_lines(out) >= 1 or first.poll() is not None, 240,
                 "the first committed row")
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        first.send_signal(signal.SIGTERM)  # the driver alone, as `kill PID` does
        log = first.communicate(timeout=120)[0].decode()
        assert first.returncode == 143, log[-3000:]
        assert RESUME in log
        # The local Ray the driver started went down with it (not left orphaned).
        wait_for(lambda: not _group_alive(first.pid), 60, "the run's Ray processes to exit")
    finally:
        if first.poll() is None or _group_alive(first.pid):
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=60)

    (run_dir,) = (out / "runs").iterdir()
    records = read_records(run_dir)
    assert records[-1]["type"] == "run-end" and records[-1]["status"] == "interrupted"
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert len(rows) == 8
    done = [r for r in rows if r["status"] == "done"]
    assert 1 <= len(done) < 8 and {r["status"] for r in rows} <= {"done", "not-run"}
    assert len(done) == sum(ok_counts(run_dir).values())  # results agree with the ledger

    second = cli_run_process(manifest, out, tmp_prefix="kbterm")
    log = second.communicate(timeout=300)[0].decode()
    assert second.returncode == 0, log[-3000:]
    assert [p.name for p in (out / "runs").iterdir()] == [run_dir.name]  # the same run resumed
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert len(rows) == 8 and {r["status"] for r in rows} == {"done"}
    oks = ok_counts(run_dir)
    assert set(oks) == {r["key"] for r in rows} and set(oks.values()) == {1}  # none redone
    records = read_records(run_dir)
    assert sum(r["type"] == "run-start" for r in records) == 2
    assert records[-1]["type"] == "run-end" and records[-1]["status"] == "complete"
