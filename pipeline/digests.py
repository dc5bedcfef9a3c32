"""SHA-256 of source images, remembered by (path, size, mtime_ns) in a small sqlite index.

Hashing every source file is the main cost of planning a large manifest that is mostly
cache hits, so a file is hashed only when its (path, size, mtime_ns) is new. The index
lives beside a local store (``<store>/index/source_digests.sqlite``) or in the user cache
for remote stores. A stale entry needs the same path, size and nanosecond mtime as the
changed file, which in-place editors do not produce.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.fs as pafs

from pipeline.errors import BadRowError, TransientError

_CHUNK = 1 << 20
_SQL_CHUNK = 500


def _is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _local_path(location: str) -> str:
    return location[len("file://"):] if location.startswith("file://") else location


def read_source_bytes(location: str) -> bytes:
    """The bytes of a source image (local path or pyarrow-filesystem URI).

    A missing file is a bad row; other I/O errors may pass (transient)."""
    try:
        if _is_uri(location):
            fs, path = pafs.FileSystem.from_uri(location)
            with fs.open_input_stream(path) as stream:
                return stream.read()
        with open(_local_path(location), "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise BadRowError(f"source image {location!r} not found; fix the path in the "
                          f"manifest's image column") from exc
    except IsADirectoryError as exc:
        raise BadRowError(f"source image {location!r} is a directory, not a file") from exc
    except OSError as exc:
        if "not found" in str(exc).lower() or "no such file" in str(exc).lower():
            raise BadRowError(f"source image {location!r} not found; fix the path in the "
                              f"manifest's image column") from exc
        raise TransientError(f"reading source image {location!r} failed: {exc}") from exc


def _stat(location: str) -> tuple[int, int]:
    """(size, mtime_ns) of a source; raises BadRowError when it does not exist."""
    if _is_uri(location):
        fs, path = pafs.FileSystem.from_uri(location)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            raise BadRowError(f"source image {location!r} not found; fix the path in the "
                              f"manifest's image column")
        return int(info.size or 0), int(info.mtime_ns or 0)
    try:
        st = os.stat(_local_path(location))
    except FileNotFoundError as exc:
        raise BadRowError(f"source image {location!r} not found; fix the path in the "
                          f"manifest's image column") from exc
    except OSError as exc:
        raise BadRowError(f"source image {location!r} cannot be read: {exc}") from exc
    if not os.path.isfile(_local_path(location)):
        raise BadRowError(f"source image {location!r} is not a regular file")
    return st.st_size, st.st_mtime_ns


def _hash_source(location: str) -> str:
    if _is_uri(location):
        return hashlib.sha256(read_source_bytes(location)).hexdigest()
    h = hashlib.sha256()
    try:
        with open(_local_path(location), "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except FileNotFoundError as exc:
        raise BadRowError(f"source image {location!r} not found; fix the path in the "
                          f"manifest's image column") from exc
    return h.hexdigest()


def default_index_path(store_root: str) -> Path:
    """Where the digest index lives for a store (local store: inside it)."""
    if "://" not in store_root or store_root.startswith("file://"):
        return Path(_local_path(store_root)) / "index" / "source_digests.sqlite"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kontext-batch" / "source_digests.sqlite"


class SourceDigests:
    """Digest lookups for many sources at once, with a persistent (path, size, mtime) index."""

    def __init__(self, index_path: str | Path | None, threads: int = 4) -> None:
        self._threads = threads
        self._db: sqlite3.Connection | None = None
        self.hashed = 0  # files actually read and hashed (the index missed)
        if index_path is not None:
            Path(index_path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(index_path), timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS digests (path TEXT PRIMARY KEY, "
                             "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
                             "sha256 TEXT NOT NULL)")
            self._db.commit()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _lookup(self, paths: list[str]) -> dict[str, tuple[int, int, str]]:
        if self._db is None or not paths:
            return {}
        found: dict[str, tuple[int, int, str]] = {}
        for i in range(0, len(paths), _SQL_CHUNK):
            chunk = paths[i:i + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for path, size, mtime, digest in self._db.execute(
                    f"SELECT path, size, mtime_ns, sha256 FROM digests WHERE path IN ({marks})",
                    chunk):
                found[path] = (size, mtime, digest)
        return found

    def digest_many(self, locations: Iterable[str]) -> dict[str, str | BaseException]:
        """location -> sha256 hex, or the exception (BadRowError when missing/unreadable)."""
        unique = list(dict.fromkeys(locations))
        result: dict[str, str | BaseException] = {}
        stats: dict[str, tuple[int, int]] = {}
        for loc in unique:
            try:
                stats[loc] = _stat(loc)
            except Exception as exc:  # a bad row, reported per row by the planner
                result[loc] = exc
        known = self._lookup(list(stats))
        to_hash = [loc for loc, st in stats.items()
                   if loc not in known or known[loc][:2] != st]
        hashing = set(to_hash)
        for loc in stats:
            if loc not in hashing:
                result[loc] = known[loc][2]
        if to_hash:
            self.hashed += len(to_hash)

            def run(loc: str) -> tuple[str, str | BaseException]:
                try:
                    return loc, _hash_source(loc)
                except Exception as exc:
                    return loc, exc

            if len(to_hash) == 1:
                computed = [run(to_hash[0])]
            else:
                with ThreadPoolExecutor(self._threads) as pool:
                    computed = list(pool.map(run, to_hash))
            rows = []
            for loc, value in computed:
                result[loc] = value
                if isinstance(value, str):
                    rows.append((loc, stats[loc][0], stats[loc][1], value))
            if self._db is not None and rows:
                self._db.executemany("INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?)", rows)
                self._db.commit()
        return result
