"""One process per job run: an exclusive lock on RUN_DIR/job.lock (flock; freed when the
process exits, even on SIGKILL, so a killed run never leaves a stale lock behind).

It is taken before the manifest is built and held around the whole run; the pipeline's own
run lock (RUN_DIR/.lock, pipeline.runlock) is taken inside the run. ``run_dir_busy`` checks
both, so retention never deletes a folder that a plain ``kontext-batch run --run-id`` uses.
The locking itself is pipeline.runlock's; this module names the job's lock file."""

from __future__ import annotations

from pathlib import Path

from pipeline.runlock import LOCK_NAME, held_elsewhere, try_lock

JOB_LOCK_NAME = "job.lock"


class RunLock:
    def __init__(self, run_dir: Path, name: str = JOB_LOCK_NAME) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / name
        self._lock = None

    def acquire(self) -> bool:
        """True when this process now holds the lock; False when another one does."""
        self._lock = try_lock(self.run_dir, self.path.name)
        return self._lock is not None

    def held_elsewhere(self) -> bool:
        """True when another process holds the lock (checked without keeping it)."""
        return held_elsewhere(self.path)

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_dir_busy(run_dir: Path) -> bool:
    """True when a job (job.lock) or a pipeline run (.lock) holds ``run_dir`` right now."""
    return held_elsewhere(Path(run_dir) / JOB_LOCK_NAME) or held_elsewhere(Path(run_dir) / LOCK_NAME)
