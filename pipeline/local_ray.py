"""The processes of a local Ray a run starts, recorded so that none outlive the run.

A driver killed with SIGKILL (OOM killer, ``kill -9``) leaves Ray's DashboardAgent and
RuntimeEnvAgent running: only Ray's shutdown stops them. So right after starting a local Ray
the driver records its Ray processes (pid, start time, command line) in
``<Ray temp dir>/kontext-batch-local/driver-<pid>.json``; the next local start stops those of a
driver that is gone, and a driver's normal exit stops what is left of its own and removes the
record. A process is only signalled when its start time and command line are the recorded
ones, so a pid the kernel has given to another program since is never touched.

Linux only (``/proc``); elsewhere nothing is recorded.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

RECORDS = "kontext-batch-local"
_PROC = Path("/proc")
_exit_hooks: set[tuple[int, Path]] = set()  # (driver pid, record): forks inherit hooks


@dataclass(frozen=True)
class Proc:
    pid: int
    start: int  # /proc/PID/stat starttime (clock ticks after boot): differs for a reused pid
    cmdline: str


def records_dir() -> Path:
    """Where records live: beside Ray's own sessions (RAY_TMPDIR, else the temp dir)."""
    root = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    return Path(root) / "ray" / RECORDS


def identify(pid: int) -> Proc | None:
    """The live (non-zombie) process ``pid``, or None."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        cmdline = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # the name may hold spaces and ')'
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return Proc(pid, int(fields[19]), cmdline.replace(b"\0", b" ").decode(errors="replace").strip())


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[-1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def is_ray_process(proc: Proc) -> bool:
    """Ray's daemons run from its package (``.../ray/core/src/ray/raylet/raylet``,
    ``.../ray/_private/log_monitor.py``); its workers and agents rename themselves ``ray::*``."""
    return proc.cmdline.startswith("ray::") or f"{os.sep}ray{os.sep}" in proc.cmdline


def _alive(proc: Proc) -> bool:
    return identify(proc.pid) == proc


def record_local_ray() -> Path | None:
    """Record this driver's Ray processes (call right after it started a local Ray)."""
    if not _PROC.is_dir():
        return None
    driver = identify(os.getpid())
    procs = [p for p in map(identify, descendants(os.getpid()))
             if p is not None and is_ray_process(p)]
    if driver is None or not procs:
        return None
    folder = records_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"driver-{driver.pid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"driver": asdict(driver),
                               "processes": [asdict(p) for p in procs]}))
    os.replace(tmp, path)
    if (driver.pid, path) not in _exit_hooks:
        _exit_hooks.add((driver.pid, path))
        atexit.register(_at_exit, driver.pid, path)
    return path


def _load(path: Path) -> tuple[Proc, list[Proc]] | None:
    try:
        doc = json.loads(path.read_text())
        return Proc(**doc["driver"]), [Proc(**p) for p in doc["processes"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stop_leftovers(grace_s: float = 3.0) -> list[Proc]:
    """Stop the recorded Ray processes whose driver is gone (or is this process, whose Ray is
    not running any more); returns those that were still alive. Records of a driver still
    running elsewhere are left alone: that run is using its Ray."""
    folder = records_dir()
    if not folder.is_dir():
        return []
    stopped: list[Proc] = []
    for path in sorted(folder.glob("driver-*.json")):
        loaded = _load(path)
        if loaded is not None:
            driver, procs = loaded
            if driver.pid != os.getpid() and _alive(driver):
                continue
            stopped += _stop([p for p in procs if is_ray_process(p) and _alive(p)], grace_s)
        path.unlink(missing_ok=True)
    return stopped


def _stop(procs: list[Proc], grace_s: float) -> list[Proc]:
    """SIGTERM, then SIGKILL what is still alive after ``grace_s`` (the agents ignore
    SIGTERM once their raylet is gone)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            if _alive(proc):
                try:
                    os.kill(proc.pid, sig)
                except OSError:
                    pass
        deadline = time.monotonic() + grace_s
        while any(map(_alive, procs)) and time.monotonic() < deadline:
            time.sleep(0.05)
    return procs


def _at_exit(driver_pid: int, path: Path) -> None:
    """At this driver's exit: shut its Ray down if still up, then stop what is left."""
    if os.getpid() != driver_pid:
        return  # a forked child inherited the hook; the Ray is its parent's
    if not path.exists():
        return
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # the record is still acted on below
        pass
    loaded = _load(path)
    if loaded is not None:
        _stop([p for p in loaded[1] if _alive(p)], grace_s=3.0)
    path.unlink(missing_ok=True)
