"""One process per run directory at a time: an advisory lock held for the whole run.

Two invocations of the same command (a nightly job overlapping a manual run) derive the same
run id. Without a lock both would append to one ledger and overwrite one results table. With
it, the second invocation treats the busy run like a finished one and takes the next id
(``<id>-2``), so both finish, each with its own ledger; their shared keys are committed to
the store once (``Store.commit_once``). The lock is ``flock`` on ``<run_dir>/.lock``: the
kernel drops it when the process ends, however it ends, so a killed run never stays locked.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.resume import RunHistory, ledger_resumable, read_history

LOCK_NAME = ".lock"


class RunLock:
    """An exclusive lock on one run directory (``try_lock`` makes one)."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def try_lock(run_dir: Path, name: str = LOCK_NAME) -> RunLock | None:
    """Lock ``run_dir/name`` (the folder is created if needed); None when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / name
    fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return RunLock(fd, path)


def held_elsewhere(path: Path) -> bool:
    """True when another process holds the lock file ``path`` (checked without keeping it)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def _holder(run_dir: Path) -> str:
    try:
        return f" (pid {(run_dir / LOCK_NAME).read_text().strip()})"
    except OSError:
        return ""


def acquire_run(runs_dir: Path, base_id: str,
                explicit: str | None) -> tuple[str, RunHistory, RunLock]:
    """The run id to use, its history and its lock: resume an unfinished run nobody else is
    running, else the next free id. ``explicit`` (--run-id) must not be busy."""
    if explicit:
        lock = try_lock(runs_dir / explicit)
        if lock is None:
            raise ConfigError(f"run {explicit!r} is in progress in another process"
                              f"{_holder(runs_dir / explicit)}; wait for it to finish, or "
                              "pick another --run-id")
        return explicit, read_history(runs_dir / explicit / "ledger.jsonl"), lock
    n = 1
    while True:
        run_id = base_id if n == 1 else f"{base_id}-{n}"
        ledger = runs_dir / run_id / "ledger.jsonl"
        # The tail says whether it finished; only the run taken is parsed in full (nightly
        # re-runs pile up finished runs of a million rows each under the same base id).
        if ledger_resumable(ledger):
            lock = try_lock(runs_dir / run_id)
            if lock is not None:
                history = read_history(ledger)  # again, under the lock: it may have ended
                if history.resumable:
                    return run_id, history, lock
                lock.release()
        n += 1
