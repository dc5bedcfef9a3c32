"""The local Ray a run starts, with the real CLI in a child process:

- while the run goes on, every TCP socket its Ray processes listen on is bound to 127.0.0.1
  (so Ray's token auth may stay off for it, which the CLI no longer sets for everyone);
- after the driver is SIGKILLed mid-run (Ray's agents outlive it), the same command started
  again stops what the killed run left, resumes the run and prints its --json summary;
- once it has exited, no process of either run is left.

One test, two Ray starts (slow on a small machine)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from pipeline_helpers import REPO, TEST_MODEL, make_manifest, short_tmp, wait_for

from pipeline.local_ray import Proc, descendants, identify

LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def _listening() -> dict[str, str]:
    """socket inode -> local address (hex, as /proc/net/tcp* write it) of listening sockets."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                found[fields[9]] = fields[1]
    return found


def _listen_addresses(procs: list[Proc]) -> list[tuple[str, str]]:
    """(process, address:port) of every socket these processes listen on."""
    listening, found = _listening(), []
    for proc in procs:
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
            except OSError:
                continue
            inode = target[len("socket:["):-1] if target.startswith("socket:[") else None
            if inode in listening:
                found.append((proc.cmdline[:60], listening[inode]))
    return found


def _with_env(marker: str) -> list[int]:
    """Processes whose environment holds ``marker`` (this test's RAY_TMPDIR)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "environ").read_bytes() and identify(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_local_ray_is_loopback_only_and_a_killed_runs_processes_are_stopped(
        tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    out, ray_tmp = tmp_path / "out", short_tmp("kblr")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1"}
    for name in ("RAY_AUTH_MODE", "KONTEXT_BATCH_FAULTS", "KONTEXT_TEST_KILL_AT", "RAY_ADDRESS"):
        env.pop(name, None)  # RAY_AUTH_MODE too: the CLI sets it for its loopback Ray itself
    marker = f"RAY_TMPDIR={ray_tmp}"
    argv = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out),
            "--model", TEST_MODEL, "--device", "cpu", "--batch-size", "2", "--actors", "1",
            "--no-report"]
    faults = [{"kind": "sleep", "row_id": "p0-v0", "seconds": 120, "times": 1,
               "marker_dir": str(tmp_path / "faults")}]
    first = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**env, "KONTEXT_BATCH_FAULTS": json.dumps(faults)},
                             start_new_session=True)
    try:
        # Mid-run: the actor is asleep in its first batch.
        wait_for(lambda: (tmp_path / "faults" / "fault-0-0").exists(), 240, "the first batch")
        procs = [p for p in map(identify, descendants(first.pid)) if p is not None]
        sockets = _listen_addresses(procs)
        assert len(sockets) >= 3, sockets  # GCS, raylet, workers at least
        assert [s for s in sockets if s[1].split(":")[0] not in LOOPBACK] == [], sockets
        assert (Path(ray_tmp) / "ray" / "kontext-batch-local" / f"driver-{first.pid}.json").exists()

        first.send_signal(signal.SIGKILL)
        first.wait()
        # The same command again: stops what is left, resumes the run, says so in JSON.
        second = subprocess.run([*argv, "--json"], cwd=REPO, env=env, capture_output=True,
                                timeout=300)
        assert second.returncode == 0, second.stderr.decode()[-3000:]
        doc = json.loads(second.stdout)
        assert doc["status"] == "complete" and doc["exit_code"] == 0
        assert doc["counts"]["done"] + doc["counts"]["cache-hit"] == 4
        assert Path(doc["results"]).is_file() and Path(doc["ledger"]).is_file()
        assert b"\x1b[" not in second.stderr  # not a terminal: no colour codes
        # Neither run left a process behind (the killed run's agents included).
        wait_for(lambda: not any(identify(p.pid) == p for p in procs), 30,
                 "the killed run's processes to be gone")
        wait_for(lambda: _with_env(marker) == [], 30, "every Ray process of this test to exit")
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        for pid in _with_env(marker):  # never leave daemons, whatever failed above
            os.kill(pid, signal.SIGKILL)
