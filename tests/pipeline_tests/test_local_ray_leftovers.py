"""What a killed run's local Ray left is stopped at the next local start,
and nothing else is: pipeline.local_ray with stand-in processes named like Ray's (argv[0]
``ray::...``, as Ray's agents and workers name themselves), so no Ray starts here.
tests/pipeline_tests/test_local_ray_processes.py does it with a real Ray and a SIGKILLed driver."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from pipeline_helpers import wait_for

from pipeline import local_ray
from pipeline.local_ray import Proc, identify

STUBBORN = ("import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(120)")


@pytest.fixture
def spawn() -> Iterator:
    started: list[subprocess.Popen] = []

    def start(argv0: str, stubborn: bool = False) -> tuple[subprocess.Popen, Proc]:
        if stubborn:  # ignores SIGTERM, as Ray's agents do once their raylet is gone
            child = subprocess.Popen([argv0, "-c", STUBBORN], executable=sys.executable,
                                     stdout=subprocess.PIPE, text=True)
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        else:
            child = subprocess.Popen([argv0, "120"], executable="/bin/sleep")
        started.append(child)
        wait_for(lambda: (p := identify(child.pid)) is not None and p.cmdline.startswith(argv0),
                 10, f"{argv0} to start")
        proc = identify(child.pid)
        assert proc is not None
        return child, proc

    yield start
    for child in started:
        child.kill()
        child.wait()


def _write_record(folder: Path, driver: Proc, procs: list[Proc]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"driver-{driver.pid}.json"
    path.write_text(json.dumps({"driver": asdict(driver), "processes": [asdict(p) for p in procs]}))
    return path


def _gone(child: subprocess.Popen, wait_s: float = 0.0) -> bool:
    """Exited (a zombie until waited for counts as gone). ``wait_s``: a signal sent is delivered
    when the kernel next schedules the process, which on a loaded machine can take a while."""
    deadline = time.monotonic() + wait_s
    while identify(child.pid) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def test_leftovers_of_a_gone_driver_are_stopped_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawn) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    agent, agent_proc = spawn("ray::DashboardAgent")
    stubborn, stubborn_proc = spawn("ray::RuntimeEnvAgent", stubborn=True)
    recycled, recycled_proc = spawn("ray::IDLE")
    other, other_proc = spawn("sleep")  # alive, recorded, but not a Ray process
    dead_driver = Proc(pid=1, start=-1, cmdline="python -m pipeline.cli run m.parquet")
    record = _write_record(local_ray.records_dir(), dead_driver, [
        agent_proc, stubborn_proc, other_proc,
        replace(recycled_proc, start=recycled_proc.start - 1),  # the pid was given away since
    ])
    stopped = local_ray.stop_leftovers(grace_s=0.5)
    assert {p.pid for p in stopped} == {agent.pid, stubborn.pid}
    assert _gone(agent, 10) and _gone(stubborn, 10)  # the stubborn one by SIGKILL
    assert not _gone(recycled) and not _gone(other)
    assert not record.exists()


def test_a_record_whose_driver_is_still_running_is_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawn) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    _, driver = spawn("python-driver")
    agent, agent_proc = spawn("ray::DashboardAgent")
    record = _write_record(local_ray.records_dir(), driver, [agent_proc])
    assert local_ray.stop_leftovers(grace_s=0.5) == []
    assert not _gone(agent) and record.exists()


def test_record_lists_this_drivers_ray_processes_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawn) -> None:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr(local_ray, "_exit_hooks", {(0, Path())})  # keep atexit out of it
    monkeypatch.setattr("atexit.register", lambda *a, **k: None)
    agent, _ = spawn("ray::DashboardAgent")
    other, _ = spawn("sleep")
    path = local_ray.record_local_ray()
    assert path is not None and path.parent == tmp_path / "ray" / "kontext-batch-local"
    doc = json.loads(path.read_text())
    pids = {p["pid"] for p in doc["processes"]}
    assert agent.pid in pids and other.pid not in pids
    # This driver's next local start (its Ray shut down by then) stops what is left of it.
    local_ray.stop_leftovers(grace_s=0.5)
    assert _gone(agent, 10) and not _gone(other) and not path.exists()
