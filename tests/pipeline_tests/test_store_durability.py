"""A local store commit is durable: each temp file is fsynced before it is renamed into place,
and its folder after, so a power loss never leaves a truncated output under its final name (it
would be a cache hit for good). Object stores keep their single put. No Ray."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from pipeline.store import Store

KEY = "ab" + "0" * 62
DATA = b"\x89PNG pretend pixels" * 100


class Recorder:
    """Records os.open / os.fsync / os.close and the store filesystem's moves, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Store,
                 fail_fsync_of: str | None = None, dir_fsync_errno: int | None = None) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.paths: dict[int, str] = {}  # open fd -> path
        real_open, real_fsync, real_close = os.open, os.fsync, os.close

        def fake_open(path, flags, *args, **kwargs):
            fd = real_open(path, flags, *args, **kwargs)
            self.paths[fd] = os.fsdecode(path)
            self.events.append(("open", os.fsdecode(path), fd))
            return fd

        def fake_fsync(fd):
            path = self.paths.get(fd, "?")
            self.events.append(("fsync", path, fd))
            if fail_fsync_of is not None and path.startswith(fail_fsync_of + ".tmp-"):
                raise OSError(errno.EIO, "Input/output error", path)
            if dir_fsync_errno is not None and os.path.isdir(path):
                raise OSError(dir_fsync_errno, os.strerror(dir_fsync_errno), path)
            return real_fsync(fd)

        def fake_close(fd):
            self.events.append(("close", self.paths.pop(fd, "?"), fd))
            return real_close(fd)

        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "fsync", fake_fsync)
        monkeypatch.setattr(os, "close", fake_close)
        store.fs = _MoveRecorder(store.fs, self.events)

    def index(self, *event: Any) -> int:
        return self.events.index(event)

    def fsynced(self, path: str) -> list[int]:
        """Indexes of the fsyncs of ``path``."""
        return [i for i, e in enumerate(self.events) if e[0] == "fsync" and e[1] == path]

    def move_into(self, final: str) -> tuple[int, str]:
        """(index of the move onto ``final``, the temp name moved)."""
        (found,) = [(i, e[1]) for i, e in enumerate(self.events)
                    if e[0] == "move" and e[2] == final]
        return found


class _MoveRecorder:
    def __init__(self, fs: pafs.FileSystem, events: list[tuple[Any, ...]]) -> None:
        self._fs, self._events = fs, events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def move(self, src: str, dest: str) -> None:
        self._events.append(("move", src, dest))
        self._fs.move(src, dest)


def test_each_temp_file_is_fsynced_before_its_rename_and_the_folder_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(tmp_path / "store"))
    rec = Recorder(monkeypatch, store)
    uri = store.commit(KEY, "png", DATA, {"origin": {"run_id": "r"}})
    monkeypatch.undo()

    folder = os.path.dirname(store.object_path(KEY, "png"))
    for final in (store.sidecar_path(KEY), store.object_path(KEY, "png")):
        moved_at, tmp = rec.move_into(final)
        assert tmp.startswith(final + ".tmp-")
        synced = rec.fsynced(tmp)
        assert synced and synced[0] < moved_at, rec.events  # bytes durable before the name
        assert any(i > moved_at for i in rec.fsynced(folder)), rec.events  # the rename too
    # The sidecar's rename is durable before the output is even written.
    sidecar_moved, _ = rec.move_into(store.sidecar_path(KEY))
    _, object_tmp = rec.move_into(store.object_path(KEY, "png"))
    first_object_open = min(i for i, e in enumerate(rec.events)
                            if e[0] == "open" and e[1] == object_tmp)
    assert [i for i in rec.fsynced(folder) if sidecar_moved < i < first_object_open]
    # A new shard folder's name is made durable in its parents.
    assert rec.fsynced(str(tmp_path / "store" / "objects"))
    assert rec.fsynced(str(tmp_path / "store"))
    # Every fd it opened was closed.
    opened = [e[2] for e in rec.events if e[0] == "open"]
    closed = [e[2] for e in rec.events if e[0] == "close"]
    assert sorted(opened) == sorted(closed)

    # Same bytes as ever: the output, and a sidecar that matches it.
    assert uri == store.object_path(KEY, "png")
    assert Path(uri).read_bytes() == DATA
    side = json.loads(Path(store.sidecar_path(KEY)).read_bytes())
    assert side["sha256"] == hashlib.sha256(DATA).hexdigest() and side["bytes"] == len(DATA)
    assert store.read_verified(KEY, "png") == DATA
    assert sorted(p.name for p in Path(folder).iterdir()) == [f"{KEY}.json", f"{KEY}.png"]


def test_an_output_whose_fsync_fails_never_gets_its_final_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(str(tmp_path / "store"))
    Recorder(monkeypatch, store, fail_fsync_of=store.object_path(KEY, "png"))
    with pytest.raises(OSError, match="Input/output error"):
        store.commit(KEY, "png", DATA, {})
    monkeypatch.undo()
    folder = Path(store.object_path(KEY, "png")).parent
    assert sorted(p.name for p in folder.iterdir()) == [f"{KEY}.json"]  # no output, no temp
    assert store.present({KEY: "png"}) == {}
    # Once the disk behaves, the same commit goes through.
    store.commit(KEY, "png", DATA, {})
    assert store.read_verified(KEY, "png") == DATA


@pytest.mark.parametrize("code", [errno.EINVAL, errno.EIO])
def test_folders_that_cannot_be_fsynced_are_skipped_but_io_errors_are_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    store = Store(str(tmp_path / "store"))
    Recorder(monkeypatch, store, dir_fsync_errno=code)
    if code == errno.EIO:
        with pytest.raises(OSError, match="Input/output error"):
            store.commit(KEY, "png", DATA, {})
        return
    store.commit(KEY, "png", DATA, {})  # e.g. a filesystem without directory fsync
    monkeypatch.undo()
    assert store.read_verified(KEY, "png") == DATA


def test_object_stores_keep_their_single_put_without_local_fsyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mock = pafs._MockFileSystem()
    store = Store("bucket/store")
    store.fs, store.base, store._atomic_rename, store._scheme = mock, "bucket/store", False, "mock"
    rec = Recorder(monkeypatch, store)
    uri = store.commit(KEY, "webp", DATA, {"x": 1})
    monkeypatch.undo()
    assert uri == f"mock://bucket/store/objects/ab/{KEY}.webp"
    assert [e for e in rec.events if e[0] in ("fsync", "move")] == []
    assert store.read_verified(KEY, "webp") == DATA
