"""SHA-256 of source images, remembered by what a stat says of the file, in a small sqlite index.

Hashing every source file is the main cost of planning a large manifest that is mostly
cache hits, so a file is hashed only when its stat is new. The index lives beside a local
store (``<store>/index/source_digests.sqlite``) or in the user cache for remote stores.

What the index trusts: a local file whose path, size, mtime_ns, ctime_ns and inode are all
unchanged still has the recorded bytes. mtime alone is not enough: ``cp -p``, ``rsync -a``
and ``tar x`` give a replaced file the old size and mtime, but none can set ctime (the
kernel stamps it on every write, rename, chmod) and most give it a new inode. A remote
source (s3://, gs://, ...) is trusted on path, size and mtime: object stores set an object's
modification time themselves on every write. What it does not catch: a file rewritten with
the same size within one timestamp tick of being hashed, or bytes changed under the
filesystem (bit rot); ``rehash=True`` (the run's ``rehash_sources``) ignores the index and
hashes every source again, refreshing the index.

A disk that fills while the index is written (sqlite: "database or disk is full") stops
the run cleanly (``DigestIndexFull``, a RunFolderFull: exit 1, resumable); sqlite rolls the
failed transaction back, so nothing half-written is trusted later. An index that is not a
database any more (a damaged file) is set aside and started afresh: it is only a cache.

Errors: a source the manifest must fix (not found, a directory, permission denied) is a
``BadRowError``; any other I/O error (EIO, ESTALE, a timeout, an S3 503) may pass, so it is a
``TransientError`` and ``digest_many`` tries it again with backoff before giving up on it.
A source whose stat keeps failing is still hashed (reading it may work): it is just not
indexed.

Remote sources (s3://, gs://, ...): one pyarrow filesystem per bucket serves a SourceDigests for
its lifetime (``FileSystem.from_uri`` looks credentials up again on every call), and a batch's
stats run in a thread pool, as each is a network round trip.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote

import pyarrow.fs as pafs

from pipeline.errors import BadRowError, PipelineError, RunFolderFull, TransientError

_CHUNK = 1 << 20
_SQL_CHUNK = 500
# errnos that say the path is wrong, not that the storage had a bad moment.
_MISSING = (errno.ENOENT, errno.ENOTDIR)
_NO_PERMISSION = (errno.EACCES, errno.EPERM)
_BAD_PATH = (errno.ENAMETOOLONG, errno.ELOOP)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
_TABLE = "digests"
_COLUMNS = ("path", "size", "mtime_ns", "ctime_ns", "ino", "sha256")
# (size, mtime_ns, ctime_ns, inode): what a stat must still say for an indexed digest to hold
Stat = tuple[int, int, int, int]


class DigestIndexFull(RunFolderFull):
    """The disk holding the source-digest index is full: the run stops (exit 1) and the same
    command resumes it once there is space; the message says where."""


def _index_full(path: Path, exc: BaseException) -> DigestIndexFull:
    return DigestIndexFull(f"the source-digest index {path} is out of space ({exc}); free "
                           f"space on that disk (the index is rebuilt as needed, so it may "
                           f"also be deleted)")


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _NO_SPACE
    code = getattr(exc, "sqlite_errorcode", None)
    return code == getattr(sqlite3, "SQLITE_FULL", 13) or "disk is full" in str(exc).lower()


def _is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _local_path(location: str) -> str:
    return location[len("file://"):] if location.startswith("file://") else location


def _not_found(location: str) -> BadRowError:
    return BadRowError(f"source image {location!r} not found; fix the path in the "
                       f"manifest's image column")


def source_error(location: str, exc: OSError) -> PipelineError:
    """What an I/O error on a source means: a bad row when the path is wrong (not found, a
    directory, permission denied), else transient (EIO, ESTALE, a timeout, an S3 503)."""
    text = str(exc).lower()
    if exc.errno in _MISSING or "not found" in text or "no such file" in text:
        return _not_found(location)
    if exc.errno == errno.EISDIR:
        return BadRowError(f"source image {location!r} is a directory, not a regular file")
    if exc.errno in _NO_PERMISSION or "permission denied" in text or "access denied" in text \
            or "access_denied" in text:
        return BadRowError(f"source image {location!r} cannot be read: permission denied "
                           f"({exc}); fix its permissions or the manifest's image column")
    if exc.errno in _BAD_PATH:
        return BadRowError(f"source image {location!r} cannot be opened ({exc}); fix the "
                           f"path in the manifest's image column")
    return TransientError(f"reading source image {location!r} failed: {exc} (an I/O error "
                          f"that may pass)")


class RemoteFilesystems:
    """One pyarrow filesystem per (scheme, bucket or host, URI options), made on first use.

    ``FileSystem.from_uri`` builds a new filesystem, looking up credentials (and an S3
    bucket's region) each time; calling it per source made planning a remote manifest crawl.
    How a filesystem's paths map to its URIs (S3/GCS: ``bucket/key``, HDFS: ``/key``) is
    learned from its first ``from_uri``; a URI that does not fit gets its own ``from_uri``."""

    def __init__(self) -> None:
        self._known: dict[tuple[str, str, str], tuple[pafs.FileSystem, str] | None] = {}
        self._lock = threading.Lock()  # one from_uri per bucket, however many threads ask

    def resolve(self, location: str) -> tuple[pafs.FileSystem, str]:
        """(filesystem, path inside it) for a URI, as ``FileSystem.from_uri`` returns them."""
        scheme, _, rest = location.partition("://")
        rest, _, options = rest.partition("?")
        root = (scheme.lower(), rest.split("/", 1)[0], options)
        decoded = unquote(rest)  # from_uri's paths are percent-decoded
        with self._lock:
            if root not in self._known:
                fs, path = pafs.FileSystem.from_uri(location)
                prefix = decoded[:len(decoded) - len(path)] if path and decoded.endswith(
                    path) else None
                self._known[root] = None if prefix is None else (fs, prefix)
                return fs, path
            known = self._known[root]
        if known is None or not decoded.startswith(known[1]) or len(decoded) == len(known[1]):
            return pafs.FileSystem.from_uri(location)
        return known[0], decoded[len(known[1]):]


def read_source_bytes(location: str, filesystems: RemoteFilesystems | None = None) -> bytes:
    """The bytes of a source image (local path or pyarrow-filesystem URI); ``filesystems``
    reuses remote filesystems across calls.

    A missing or unreadable path is a bad row; other I/O errors may pass (transient)."""
    try:
        if _is_uri(location):
            fs, path = filesystems.resolve(location) if filesystems else \
                pafs.FileSystem.from_uri(location)
            with fs.open_input_stream(path) as stream:
                return stream.read()
        with open(_local_path(location), "rb") as f:
            return f.read()
    except OSError as exc:
        raise source_error(location, exc) from exc


def _stat(location: str, filesystems: RemoteFilesystems | None = None) -> Stat:
    """(size, mtime_ns, ctime_ns, inode) of a source (remote: ctime and inode 0); BadRowError
    when it is missing or not a file, TransientError for an I/O error that may pass."""
    try:
        if _is_uri(location):
            fs, path = filesystems.resolve(location) if filesystems else \
                pafs.FileSystem.from_uri(location)
            info = fs.get_file_info(path)
            if info.type != pafs.FileType.File:
                raise _not_found(location)
            return int(info.size or 0), int(info.mtime_ns or 0), 0, 0
        st = os.stat(_local_path(location))
    except OSError as exc:
        raise source_error(location, exc) from exc
    if stat.S_ISDIR(st.st_mode):
        raise BadRowError(f"source image {location!r} is a directory, not a regular file")
    if not stat.S_ISREG(st.st_mode):
        raise BadRowError(f"source image {location!r} is not a regular file")
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def _hash_source(location: str, filesystems: RemoteFilesystems | None = None) -> str:
    if _is_uri(location):
        return hashlib.sha256(read_source_bytes(location, filesystems)).hexdigest()
    h = hashlib.sha256()
    try:
        with open(_local_path(location), "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise source_error(location, exc) from exc
    return h.hexdigest()


def default_index_path(store_root: str) -> Path:
    """Where the digest index lives for a store (local store: inside it)."""
    if "://" not in store_root or store_root.startswith("file://"):
        return Path(_local_path(store_root)) / "index" / "source_digests.sqlite"
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "kontext-batch" / "source_digests.sqlite"


class SourceDigests:
    """Digest lookups for many sources at once, with a persistent index keyed on each file's
    stat (see the module docstring for what it trusts); ``rehash``: ignore the index."""

    def __init__(self, index_path: str | Path | None, threads: int = 4, tries: int = 3,
                 backoff_s: float = 0.5, stat_threads: int = 16, rehash: bool = False) -> None:
        self._threads = threads
        self._stat_threads = stat_threads  # for batches with remote sources (round trips)
        self._filesystems = RemoteFilesystems()
        self._tries = max(1, tries)  # per source, for errors that may pass (TransientError)
        self._backoff_s = backoff_s  # before the second try; doubled before each later one
        self._db: sqlite3.Connection | None = None
        self._rehash = rehash
        self.hashed = 0  # files actually read and hashed (the index missed)
        self._path = Path(index_path) if index_path is not None else None
        if self._path is not None:
            self._db = self._guarded(self._open)

    def _guarded(self, fn: Callable[[], object]) -> object:
        """``fn()``, with a full disk turned into DigestIndexFull (no traceback for it)."""
        try:
            return fn()
        except (sqlite3.Error, OSError) as exc:
            if not _is_full(exc):
                raise
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.rollback()
            raise _index_full(self._path, exc) from None

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return _connect(self._path)
        except sqlite3.DatabaseError as exc:
            if _is_full(exc) or "not a database" not in str(exc) and "malformed" not in str(exc):
                raise
        # A damaged index is only a lost cache: set it aside (for a look) and start afresh.
        aside = self._path.with_name(f"{self._path.name}.damaged-{time.time_ns()}")
        for suffix in ("", "-wal", "-shm"):  # a stale WAL must not replay into the new file
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{self._path}{suffix}", f"{aside}{suffix}")
        print(f"note: the source-digest index {self._path} was damaged; moved to {aside} "
              f"and rebuilt (sources are hashed again)", file=sys.stderr)
        return _connect(self._path)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _lookup(self, paths: list[str]) -> dict[str, tuple[Stat, str]]:
        if self._db is None or not paths or self._rehash:
            return {}
        found: dict[str, tuple[Stat, str]] = {}
        for i in range(0, len(paths), _SQL_CHUNK):
            chunk = paths[i:i + _SQL_CHUNK]
            marks = ",".join("?" * len(chunk))
            for path, size, mtime, ctime, ino, digest in self._db.execute(
                    f"SELECT path, size, mtime_ns, ctime_ns, ino, sha256 FROM {_TABLE} "
                    f"WHERE path IN ({marks})", chunk):
                found[path] = ((size, mtime, ctime, ino), digest)
        return found

    def _remember(self, rows: list[tuple]) -> None:
        """Index new digests in one transaction (a failure leaves the index as it was)."""
        def write() -> None:
            with self._db:  # commits, or rolls back on an exception
                self._db.executemany(f"INSERT OR REPLACE INTO {_TABLE} VALUES (?, ?, ?, ?, ?, ?)",
                                     rows)
        self._guarded(write)

    def _retrying(self, fn: Callable[[str], object], locations: list[str],
                  threads: int = 1) -> dict[str, object]:
        """location -> fn(location) or the exception it raised. TransientErrors are tried
        again, in rounds (one backoff sleep per round, however many sources failed)."""
        def call(loc: str) -> tuple[str, object]:
            try:
                return loc, fn(loc)
            except Exception as exc:  # reported per row by the planner
                return loc, exc

        out: dict[str, object] = {}
        pending = locations
        for n in range(self._tries):
            if n:
                time.sleep(self._backoff_s * 2 ** (n - 1))
            if len(pending) > 1 and threads > 1:
                pool = ThreadPoolExecutor(min(threads, len(pending)))
                try:
                    out.update(pool.map(call, pending))  # in the order given
                finally:  # on Ctrl-C or SIGTERM, do not wait for the rest of the batch
                    pool.shutdown(cancel_futures=True)
            else:
                out.update(map(call, pending))
            pending = [loc for loc in pending if isinstance(out[loc], TransientError)]
            if not pending:
                break
        return out

    def _stat(self, location: str) -> Stat:
        return _stat(location, self._filesystems)

    def _hash(self, location: str) -> str:
        return _hash_source(location, self._filesystems)

    def digest_many(self, locations: Iterable[str]) -> dict[str, str | BaseException]:
        """location -> sha256 hex, or the exception: BadRowError when the row must be fixed,
        TransientError when reading still failed after ``tries`` tries."""
        unique = list(dict.fromkeys(locations))
        result: dict[str, str | BaseException] = {}
        stats: dict[str, Stat] = {}
        unindexed: list[str] = []  # stat kept failing: hash anyway, reading may still work
        remote = any(_is_uri(loc) for loc in unique)
        for loc, value in self._retrying(self._stat, unique,
                                         self._stat_threads if remote else 1).items():
            if isinstance(value, TransientError):
                unindexed.append(loc)
            elif isinstance(value, BaseException):
                result[loc] = value
            else:
                stats[loc] = value
        known = self._lookup(list(stats))
        to_hash = [loc for loc, st in stats.items()
                   if loc not in known or known[loc][0] != st]
        hashing = set(to_hash)
        for loc in stats:
            if loc not in hashing:
                result[loc] = known[loc][1]
        to_hash += unindexed
        if to_hash:
            self.hashed += len(to_hash)
            rows = []
            for loc, value in self._retrying(self._hash, to_hash, self._threads).items():
                result[loc] = value
                if isinstance(value, str) and loc in stats:
                    rows.append((loc, *stats[loc], value))
            if self._db is not None and rows:
                self._remember(rows)
        return result


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), timeout=60)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        columns = tuple(row[1] for row in db.execute(f"PRAGMA table_info({_TABLE})"))
        with db:
            if columns and columns != _COLUMNS:
                # An older index, keyed on (size, mtime_ns) alone: not trusted, started afresh.
                db.execute(f"DROP TABLE {_TABLE}")
            db.execute(f"CREATE TABLE IF NOT EXISTS {_TABLE} (path TEXT PRIMARY KEY, "
                       "size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
                       "ctime_ns INTEGER NOT NULL, ino INTEGER NOT NULL, sha256 TEXT NOT NULL)")
    except BaseException:
        db.close()
        raise
    return db
