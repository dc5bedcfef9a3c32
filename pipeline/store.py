"""Content-addressed output store on a pyarrow filesystem (local path, s3://, gs://, ...).

Layout under the store root::

    objects/<key[:2]>/<key>.<ext>     the output file
    objects/<key[:2]>/<key>.json      sidecar: sha256 + size of the output, key inputs, origin

Commit order: sidecar first, then the output, each written to a temporary name in the same
folder, fsynced, renamed into place and the folder fsynced (object stores: a single put, which
is atomic and durable). So an output under its final name is always complete and has its
sidecar, even after a power loss: "present" means committed. (Without the fsyncs a renamed
file can come back truncated after a crash while the fsynced ledger line naming it survives,
and a truncated non-empty output would be a cache hit for good.)
Reading verifies the bytes against the sidecar's sha256 (``read_verified``).

What a cache hit is trusted on (``check_hits``, run by planning on every stored key): the
cheap check, always: the sidecar is present, parses, names the key, records a sha256 and a
size equal to the listed size of the output (catches truncation, a lost or foreign sidecar);
plus the full check where asked (planning asks for it on local stores by default, and on any
store with --verify-cache): the output's bytes hash to the recorded sha256 (catches damage
of the same size). A damaged object is treated as missing: ``discard`` deletes it (under the
key's lock, after checking again) and remembers why in ``repairs``, so the recomputed commit
records the repair in its sidecar (``repaired``) and its attempt's notes.

Folders that vanish under a running store (the store folder deleted mid-run) are made again
on the next commit, as a fresh store would make them.

``commit_once`` is the runs' commit: when an intact output of the key is already stored (a
concurrent run committed it first) it keeps that one and writes nothing. On a local store
the check and the write hold a lock (one of 256 shard lock files under ``locks/``), so two
processes never both write one key; object stores get the check without the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

from pipeline.killpoints import kill_point

OBJECTS = "objects"
LOCKS = "locks"
_LIST_THRESHOLD = 2000  # above this many keys, list prefix folders instead of stat per key
_CHUNK = 1 << 20
_CHECK_SLICE = 4096


class CorruptObjectError(Exception):
    """A stored output does not match its sidecar (truncated, edited or bit-rotted)."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    ext: str
    size: int
    mtime_ns: int


def filesystem_for(location: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI pyarrow understands."""
    if "://" in location:
        return pafs.FileSystem.from_uri(location)
    from pathlib import Path

    return pafs.LocalFileSystem(), str(Path(location).expanduser().resolve())


def _fsync_file(path: str) -> None:
    """Flush a written local file to disk (an fd of any mode flushes the file's data)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: str) -> None:
    """Make renames and creations in a local folder durable, where the platform allows:
    folders that cannot be opened or fsynced (some network and FUSE filesystems) are skipped;
    a real I/O error (EIO) is raised."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


class Store:
    """The content-addressed store rooted at ``root`` (path or URI)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.fs, self.base = filesystem_for(root)
        self._scheme = root.split("://", 1)[0] if "://" in root and not root.startswith(
            "file://") else None
        self._atomic_rename = isinstance(self.fs, pafs.LocalFileSystem)
        self._made_dirs: set[str] = set()
        self.repairs: dict[str, str] = {}  # key -> why its damaged object was discarded

    @property
    def is_local(self) -> bool:
        """A local filesystem: reads are cheap, so planning hashes every hit fully (plan.py)."""
        return self._atomic_rename

    def check_writable(self) -> None:
        """Write and delete a tiny object under the root, so that a store no commit could
        reach (no such bucket, no or wrong credentials, no permission) fails before any work
        instead of failing every row at its commit. Raises OSError from the filesystem."""
        name = f"{self.base}/.kontext-batch-probe-{uuid.uuid4().hex}"
        with self.fs.open_output_stream(name) as stream:
            stream.write(b"probe")
        self.fs.delete_file(name)

    # -- names --------------------------------------------------------------------------
    def _dir(self, key: str) -> str:
        return f"{self.base}/{OBJECTS}/{key[:2]}"

    def object_path(self, key: str, ext: str) -> str:
        return f"{self._dir(key)}/{key}.{ext}"

    def sidecar_path(self, key: str) -> str:
        return f"{self._dir(key)}/{key}.json"

    def uri(self, key: str, ext: str) -> str:
        """What results and ledgers record: a local absolute path or scheme://path."""
        path = self.object_path(key, ext)
        return f"{self._scheme}://{path}" if self._scheme else path

    # -- writing ------------------------------------------------------------------------
    def _ensure_dir(self, path: str) -> None:
        if path not in self._made_dirs:
            self.fs.create_dir(path, recursive=True)
            if self._atomic_rename:  # local: the new folders' names must survive a crash too
                folder = path
                while folder != self.base and folder.startswith(self.base):
                    folder = os.path.dirname(folder)
                    _fsync_dir(folder)
            self._made_dirs.add(path)

    def _put(self, path: str, data: bytes) -> None:
        if not self._atomic_rename:
            with self.fs.open_output_stream(path) as out:
                out.write(data)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with self.fs.open_output_stream(tmp) as out:
                out.write(data)
            _fsync_file(tmp)  # the bytes are on disk before any name points at them
            kill_point("store-tmp-written")
            self.fs.move(tmp, path)
        except BaseException:
            try:
                self.fs.delete_file(tmp)
            except OSError:
                pass
            raise
        _fsync_dir(os.path.dirname(path))  # and the rename itself is durable

    def _again_if_vanished(self, fn: Callable[[], Any]) -> Any:
        """``fn()``; when a folder it needs was deleted under us (FileNotFoundError), the
        folders are made again (as for a fresh store) and ``fn`` is tried once more."""
        try:
            return fn()
        except FileNotFoundError:
            self._made_dirs.clear()
            return fn()

    def commit(self, key: str, ext: str, data: bytes, sidecar: Mapping[str, Any]) -> str:
        """Atomically store ``data`` as the output of ``key``; returns its URI.

        The sidecar records sha256 and size of ``data`` (plus whatever ``sidecar`` holds)."""
        doc = dict(sidecar)
        doc.update({"key": key, "ext": ext, "sha256": hashlib.sha256(data).hexdigest(),
                    "bytes": len(data)})
        if key in self.repairs:
            doc["repaired"] = self.repairs[key]
        side = json.dumps(doc, sort_keys=True).encode("utf-8")

        def write() -> None:
            self._ensure_dir(self._dir(key))
            self._put(self.sidecar_path(key), side)
            kill_point("after-sidecar")
            self._put(self.object_path(key, ext), data)

        self._again_if_vanished(write)
        return self.uri(key, ext)

    def commit_once(self, key: str, ext: str, data: bytes,
                    sidecar: Mapping[str, Any]) -> tuple[str, bool]:
        """Like ``commit``, unless an intact output of ``key`` is already stored: then that
        one is kept. Returns (uri, True when this call wrote it)."""
        with self._key_lock(key):
            info = self.fs.get_file_info(self.object_path(key, ext))
            if info.type == pafs.FileType.File and self.verify(key, ext):
                return self.uri(key, ext), False
            return self.commit(key, ext, data, sidecar), True

    @contextlib.contextmanager
    def _key_lock(self, key: str) -> Iterator[None]:
        """An exclusive lock between processes committing keys of one shard (local only)."""
        if not self._atomic_rename:  # set from the filesystem type once, in __init__
            yield
            return
        folder = f"{self.base}/{LOCKS}"

        def open_lock() -> int:
            self._ensure_dir(folder)
            return os.open(f"{folder}/{key[:2]}.lock", os.O_CREAT | os.O_RDWR, 0o644)

        fd = self._again_if_vanished(open_lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock (and a killed process's lock dies with it)

    # -- reading ------------------------------------------------------------------------
    def _open_read(self, path: str) -> Any:
        """A binary reader; local files through the builtin open (several times cheaper per
        file than a pyarrow stream: planning reads a sidecar per cache hit)."""
        return open(path, "rb") if self.is_local else self.fs.open_input_stream(path)

    def read_sidecar(self, key: str) -> dict[str, Any]:
        with self._open_read(self.sidecar_path(key)) as f:
            return json.loads(f.read())

    def read_verified(self, key: str, ext: str) -> bytes:
        """The output bytes of ``key``; raises CorruptObjectError when they do not match
        the sidecar, FileNotFoundError when absent."""
        try:
            with self.fs.open_input_stream(self.object_path(key, ext)) as f:
                data = f.read()
        except (FileNotFoundError, OSError) as exc:
            raise FileNotFoundError(f"no stored output for key {key}") from exc
        try:
            side = self.read_sidecar(key)
        except (FileNotFoundError, OSError, ValueError) as exc:
            raise CorruptObjectError(f"stored output {key}.{ext} has no readable sidecar") from exc
        if side.get("bytes") != len(data) or side.get("sha256") != hashlib.sha256(
                data).hexdigest():
            raise CorruptObjectError(f"stored output {key}.{ext} does not match its sidecar "
                                     f"sha256; it will be recomputed")
        return data

    def verify(self, key: str, ext: str) -> bool:
        """True when the output of ``key`` exists and matches its sidecar."""
        try:
            self.read_verified(key, ext)
        except (FileNotFoundError, CorruptObjectError):
            return False
        return True

    def check(self, obj: StoredObject, full: bool) -> str | None:
        """None when ``obj`` (as listed by ``present``) may be served, else why not.

        Always the cheap check (sidecar present, parseable, for this key, with a sha256 and a
        size equal to the listed size); with ``full`` the bytes are hashed too."""
        where = f"{obj.key}.{obj.ext}"
        try:
            side = self.read_sidecar(obj.key)
        except FileNotFoundError:
            return f"cache object {where} damaged (its sidecar is missing)"
        except (OSError, ValueError) as exc:
            return f"cache object {where} damaged (its sidecar is unreadable: {exc})"
        recorded, digest = (side.get("bytes"), side.get("sha256")) if isinstance(
            side, dict) else (None, None)
        if not isinstance(digest, str) or len(digest) != 64 or not isinstance(recorded, int):
            return f"cache object {where} damaged (its sidecar records no sha256 and size)"
        if side.get("key", obj.key) != obj.key:
            return f"cache object {where} damaged (its sidecar is for key {side.get('key')})"
        if recorded != obj.size:
            return f"cache object {where} damaged (size {obj.size} != {recorded} recorded)"
        if not full:
            return None
        try:
            actual = self._sha256(self.object_path(obj.key, obj.ext))
        except FileNotFoundError:
            return f"cache object {where} vanished while it was checked"
        except OSError as exc:
            return f"cache object {where} unreadable ({exc})"
        if actual != digest:
            return f"cache object {where} damaged (sha256 {actual[:12]}... != {digest[:12]}... " \
                   f"recorded)"
        return None

    def _sha256(self, path: str) -> str:
        h = hashlib.sha256()
        with self._open_read(path) as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        return h.hexdigest()

    def check_hits(self, found: Mapping[str, StoredObject], full: bool,
                   threads: int = 8) -> dict[str, str]:
        """key -> why, for the objects of ``found`` that must not be served (``check``).
        Threads: sidecar reads are round trips on object stores, and hashing releases the
        GIL."""
        objs = list(found.values())
        if len(objs) > 1 and threads > 1:
            verdicts: list[str | None] = []
            with ThreadPoolExecutor(min(threads, len(objs))) as pool:
                for i in range(0, len(objs), _CHECK_SLICE):  # bounded futures at 200k hits
                    verdicts += pool.map(lambda o: self.check(o, full), objs[i:i + _CHECK_SLICE])
        else:
            verdicts = [self.check(o, full) for o in objs]
        return {o.key: why for o, why in zip(objs, verdicts, strict=True) if why is not None}

    def discard(self, key: str, ext: str, why: str) -> None:
        """Delete a damaged object of ``key`` so it is recomputed, and remember ``why``.
        Under the key's lock, and only if it is still damaged: a concurrent run may have
        just committed a good one."""
        self.repairs[key] = f"{why}: recomputed"
        with self._key_lock(key):
            info = self.fs.get_file_info(self.object_path(key, ext))
            if info.type != pafs.FileType.File:
                return
            listed = StoredObject(key, ext, int(info.size or 0), int(info.mtime_ns or 0))
            if self.check(listed, full=True) is not None:
                self.delete(key, ext)

    def delete(self, key: str, ext: str) -> None:
        for path in (self.object_path(key, ext), self.sidecar_path(key)):
            try:
                self.fs.delete_file(path)
            except (FileNotFoundError, OSError):
                pass

    # -- membership ---------------------------------------------------------------------
    def present(self, wanted: Mapping[str, str]) -> dict[str, StoredObject]:
        """Which of ``wanted`` (key -> ext) have a non-empty committed output.

        Few keys: one stat each. Many keys: one listing per needed prefix folder, which
        is far cheaper than 200k stats on object stores and local disks alike."""
        found: dict[str, StoredObject] = {}
        if not wanted:
            return found
        if len(wanted) <= _LIST_THRESHOLD:
            keys = list(wanted)
            infos = self.fs.get_file_info([self.object_path(k, wanted[k]) for k in keys])
            for key, info in zip(keys, infos, strict=True):
                if info.type == pafs.FileType.File and (info.size or 0) > 0:
                    found[key] = StoredObject(key, wanted[key], int(info.size),
                                              int(info.mtime_ns or 0))
            return found
        for prefix in sorted({k[:2] for k in wanted}):
            for obj in self._list_prefix(prefix):
                if wanted.get(obj.key) == obj.ext and obj.size > 0:
                    found[obj.key] = obj
        return found

    def _list_prefix(self, prefix: str) -> Iterable[StoredObject]:
        selector = pafs.FileSelector(f"{self.base}/{OBJECTS}/{prefix}", allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type != pafs.FileType.File:
                continue
            name = info.base_name
            stem, dot, ext = name.partition(".")
            if not dot or ext == "json" or "." in ext or len(stem) != 64:
                continue
            yield StoredObject(stem, ext, int(info.size or 0), int(info.mtime_ns or 0))
