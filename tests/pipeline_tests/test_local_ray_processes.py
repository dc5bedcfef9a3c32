"""The local Ray a run starts, with the real CLI in a child process:

- while the run goes on, every TCP socket its Ray processes listen on is bound to 127.0.0.1,
  and its GCS asks for a token: a driver of another user (this environment without the run's
  token) is refused; the token is in no file (the user's home gets no ``.ray/auth_token``);
- after the driver is SIGKILLed mid-run (Ray's agents outlive it), the same command started
  again stops what the killed run left, resumes the run and prints its --json summary;
- once it has exited, no process of either run is left.

One test, two Ray starts (slow on a small machine)."""

from __future__ import annotations

import json
import os
import re
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


def _assert_refuses_a_driver_without_the_token(procs: list[Proc], env: dict[str, str],
                                                tmp_path: Path) -> None:
    """Another user's driver on this machine: same loopback, no token. Ray's GCS refuses it."""
    # Ray's raylet and workers are started with the GCS's address on their command line.
    named = {m.group(1) for p in procs for m in re.finditer(r"--gcs[-_]address=(\S+)", p.cmdline)}
    assert len(named) == 1 and next(iter(named)).startswith("127.0.0.1:"), named
    intruder = {k: v for k, v in env.items() if not k.startswith("RAY_")}
    # Ray's single-node mode (else it dials the machine's own address, where nothing
    # listens), and two connection tries instead of twenty.
    intruder.update(RAY_TMPDIR=short_tmp("kbin"), RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
                    RAY_gcs_server_port_wait_time_s="2")
    probe = subprocess.run(
        [sys.executable, "-c", f"import ray; ray.init(address='{named.pop()}'); "
                               "print('CONNECTED')"],
        cwd=tmp_path, env=intruder, capture_output=True, text=True, timeout=120)
    assert probe.returncode != 0 and "CONNECTED" not in probe.stdout, probe.stdout
    assert "InvalidAuthToken" in probe.stderr, probe.stderr[-2000:]


def test_local_ray_is_loopback_only_asks_for_a_token_and_a_killed_runs_processes_are_stopped(
        tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    out, ray_tmp = tmp_path / "out", short_tmp("kblr")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1"}
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "KONTEXT_BATCH_FAULTS",
                 "KONTEXT_TEST_KILL_AT", "RAY_ADDRESS"):
        env.pop(name, None)  # RAY_AUTH_* too: the CLI sets them for its loopback Ray itself
    env["HOME"] = str(tmp_path / "home")  # where Ray would write a generated token
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
        _assert_refuses_a_driver_without_the_token(procs, env, tmp_path)

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
        assert not (tmp_path / "home" / ".ray").exists()  # no token file, none needed
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        for pid in _with_env(marker):  # never leave daemons, whatever failed above
            os.kill(pid, signal.SIGKILL)
