"""Reading a batch's source images on the driver, concurrently.

A few threads and one pyarrow filesystem per bucket (pipeline.digests.RemoteFilesystems),
so a remote manifest does not pay one round trip per row in series. A row whose source cannot
be read gets the PipelineError saying why (it fails alone; its batch goes on without it).

A chained row (pipeline.chains) reads its parent's committed output from the store by key,
checked against its sidecar; its task's ``image_sha256`` becomes the digest of those bytes
(what the actor checks the bytes it decodes against), as a file source's is its file's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

from pipeline.digests import RemoteFilesystems, read_source_bytes
from pipeline.errors import BadRowError, PipelineError
from pipeline.records import Task
from pipeline.store import CorruptObjectError, Store

_READ_THREADS = 8  # concurrent source reads per batch (remote stores: round trips overlap)


class SourceReader:
    """``read(tasks)`` -> each task's bytes (or its PipelineError) and the seconds it took.
    Threads exist between ``open()`` and ``close()``; outside them reads run in series."""

    def __init__(self, store: Store | None = None,
                 chained: Mapping[int, tuple[str, str]] | None = None) -> None:
        """``chained``: row index -> (parent's key, its extension) of rows that edit another
        row's output, read from ``store``."""
        self.filesystems = RemoteFilesystems()
        self._pool: ThreadPoolExecutor | None = None
        self.store = store
        self.chained = chained or {}

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
            if task.row_index in self.chained:
                data: bytes | PipelineError = self._read_parent(task)
            else:
                data = read_source_bytes(task.image, self.filesystems)
        except PipelineError as exc:
            data = exc
        return data, time.perf_counter() - t0

    def _read_parent(self, task: Task) -> bytes:
        key, ext = self.chained[task.row_index]
        if self.store is None:
            raise BadRowError(f"image {task.image!r}: no store to read the parent's output from")
        try:
            data = self.store.read_verified(key, ext)
        except (FileNotFoundError, CorruptObjectError, OSError) as exc:
            raise BadRowError(f"image {task.image!r}: the parent row's output ({key}.{ext}) "
                              f"cannot be read from the store ({exc}); run again to recompute "
                              "the parent") from None
        task.image_sha256 = hashlib.sha256(data).hexdigest()
        return data
