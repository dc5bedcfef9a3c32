"""Reading a batch's source images on the driver, concurrently.

A few threads and one pyarrow filesystem per bucket (pipeline.digests.RemoteFilesystems),
so a remote manifest does not pay one round trip per row in series. A row whose source cannot
be read gets the PipelineError saying why (it fails alone; its batch goes on without it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pipeline.digests import RemoteFilesystems, read_source_bytes
from pipeline.errors import PipelineError
from pipeline.records import Task

_READ_THREADS = 8  # concurrent source reads per batch (remote stores: round trips overlap)


class SourceReader:
    """``read(tasks)`` -> each task's bytes (or its PipelineError) and the seconds it took.
    Threads exist between ``open()`` and ``close()``; outside them reads run in series."""

    def __init__(self) -> None:
        self.filesystems = RemoteFilesystems()
        self._pool: ThreadPoolExecutor | None = None

    def open(self) -> None:
        self._pool = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="source-read")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def read(self, tasks: Sequence[Task]) -> list[tuple[bytes | PipelineError, float]]:
        if self._pool is None or len(tasks) < 2:
            return [self._read_one(task) for task in tasks]
        return list(self._pool.map(self._read_one, tasks))

    def _read_one(self, task: Task) -> tuple[bytes | PipelineError, float]:
        t0 = time.perf_counter()
        try:
            data: bytes | PipelineError = read_source_bytes(task.image, self.filesystems)
        except PipelineError as exc:
            data = exc
        return data, time.perf_counter() - t0
