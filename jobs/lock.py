"""One process per job run: an exclusive lock on RUN_DIR/job.lock (flock; freed when the
process exits, even on SIGKILL, so a killed run never leaves a stale lock behind).

It is taken before the manifest is built and held around the whole run; the pipeline's own
run lock (RUN_DIR/.lock, pipeline.runlock) is taken inside the run. ``run_dir_busy`` checks
both, so retention never deletes a folder that a plain ``kontext-batch run --run-id`` uses."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class RunLock:
    def __init__(self, run_dir: Path, name: str = "job.lock") -> None:
        self.path = Path(run_dir) / name
        self._fd: int | None = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another one does."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def held_elsewhere(self) -> bool:
        """True when another process holds the lock (checked without keeping it)."""
        if not self.path.exists():
            return False
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock taken here
        return False

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_dir_busy(run_dir: Path) -> bool:
    """True when a job (job.lock) or a pipeline run (.lock) holds ``run_dir`` right now."""
    from pipeline.runlock import LOCK_NAME

    return RunLock(run_dir).held_elsewhere() or \
        RunLock(run_dir, LOCK_NAME).held_elsewhere()
