"""A synthetic run folder in a scratch directory, for benchmarks that time work on a big run.

``scratch_run(prefix, rows, **options)`` makes a temp directory, builds
``synthetic_runs.make_large_run(work / "out", rows=rows, **options)`` in it (a test fixture, so
tests/ goes on sys.path) and removes the directory on exit, whatever the benchmark raised.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))  # synthetic_runs: a test fixture

from synthetic_runs import SyntheticRun, make_large_run  # noqa: E402


@contextmanager
def scratch_run(prefix: str, rows: int, **options: Any) -> Iterator[tuple[Path, SyntheticRun]]:
    """Yields (the scratch directory, the run built under its ``out`` folder)."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield work, make_large_run(work / "out", rows=rows, **options)
    finally:
        shutil.rmtree(work, ignore_errors=True)
