"""Every cache hit is checked against its sidecar before it is served: a damaged stored output
(truncated, same size but other bytes, sidecar lost or garbage) is discarded and its row
recomputed, with the repair recorded; intact outputs stay hits. No Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from pipeline_helpers import make_manifest
from test_pipeline_plan import plan

from pipeline.store import Store, StoredObject

KEY = "ab" + "0" * 62
DATA = b"\x89PNG stored pixels" * 50


def _listed(store: Store, key: str = KEY, ext: str = "png") -> StoredObject:
    return store.present({key: ext})[key]


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, cheap, full", [
    ("truncated", f"size {len(DATA) // 2} != {len(DATA)} recorded", None),
    ("same size", None, "sha256"),
    ("sidecar deleted", "sidecar is missing", None),
    ("sidecar garbage", "sidecar is unreadable", None),
    ("sidecar without sha256", "records no sha256 and size", None),
    ("another key's sidecar", "sidecar is for key", None),
])
def test_damage_is_named_by_the_cheap_or_the_full_check(tmp_path: Path, damage: str,
                                                        cheap: str | None,
                                                        full: str | None) -> None:
    store = Store(str(tmp_path / "store"))
    store.commit(KEY, "png", DATA, {})
    obj, side = Path(store.object_path(KEY, "png")), Path(store.sidecar_path(KEY))
    if damage == "truncated":
        obj.write_bytes(DATA[: len(DATA) // 2])
    elif damage == "same size":
        _flip(obj)
    elif damage == "sidecar deleted":
        side.unlink()
    elif damage == "sidecar garbage":
        side.write_text("{not json")
    elif damage == "sidecar without sha256":
        side.write_text(json.dumps({"bytes": len(DATA)}))
    else:
        side.write_text(json.dumps({**json.loads(side.read_text()), "key": "cd" + "1" * 62}))
    listed = _listed(store)
    why_cheap = store.check(listed, full=False)
    why_full = store.check(listed, full=True)
    if cheap is None:
        assert why_cheap is None  # the cheap check cannot see same-size damage...
        assert full in why_full  # ...the full one does
    else:
        assert cheap in why_cheap and cheap in why_full
    assert KEY in why_full and "damaged" in why_full


def test_intact_objects_pass_both_checks(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    store.commit(KEY, "png", DATA, {"origin": {"run_id": "r"}})
    assert store.check(_listed(store), full=False) is None
    assert store.check(_listed(store), full=True) is None
    assert store.check_hits(store.present({KEY: "png"}), full=True) == {}


def test_discard_keeps_an_object_repaired_meanwhile_and_the_commit_records_the_repair(
        tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    store.commit(KEY, "png", DATA, {})
    store.discard(KEY, "png", "cache object damaged (test)")  # intact again by now: kept
    assert Path(store.object_path(KEY, "png")).read_bytes() == DATA
    _flip(Path(store.object_path(KEY, "png")))
    store.discard(KEY, "png", "cache object damaged (test)")
    assert not Path(store.object_path(KEY, "png")).exists()
    assert not Path(store.sidecar_path(KEY)).exists()
    uri, wrote = store.commit_once(KEY, "png", DATA, {})
    assert wrote and Path(uri).read_bytes() == DATA
    assert store.read_sidecar(KEY)["repaired"] == "cache object damaged (test): recomputed"


def _stored_plan(tmp_path: Path) -> tuple[Path, Store, list]:
    """A 4-row manifest whose every key is committed (as a run would have left it)."""
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    first, _, _ = plan(tmp_path, manifest, run_id="run-first")
    store = Store(str(tmp_path / "out/store"))
    for task in first.tasks:
        store.commit(task.key, task.ext, f"pixels of {task.key}".encode() * 20, {})
    return manifest, store, first.tasks


@pytest.mark.parametrize("damage", ["same size", "truncated"])
def test_a_damaged_hit_is_recomputed_not_served(tmp_path: Path, damage: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    manifest, store, tasks = _stored_plan(tmp_path)
    bad = tasks[1]
    obj = Path(store.object_path(bad.key, bad.ext))
    if damage == "same size":
        _flip(obj)
    else:
        obj.write_bytes(obj.read_bytes()[:-7])
    capsys.readouterr()
    again, outcomes, _ = plan(tmp_path, manifest, run_id="run-second")
    assert [t.row_index for t in again.tasks] == [bad.row_index]  # recomputed
    assert again.hits == 3
    assert outcomes.status[bad.row_index] == "not-run"  # not a cache hit: waits for its model
    assert not obj.exists()  # the damaged bytes are gone, so nothing can serve them
    assert store.present({bad.key: bad.ext}) == {}
    err = capsys.readouterr().err
    assert "1 stored output(s) failed their check" in err and bad.key in err


def test_a_damaged_hit_on_a_remote_store_is_caught_by_the_cheap_check(tmp_path: Path) -> None:
    """Object stores are not fully hashed by default (that would download every output), but
    a truncated object or a lost sidecar is still caught from the listing and the sidecar."""
    store = Store("bucket/store")
    store.fs, store.base, store._atomic_rename, store._scheme = (
        pafs._MockFileSystem(), "bucket/store", False, "mock")
    store.commit(KEY, "png", DATA, {})
    with store.fs.open_output_stream(store.object_path(KEY, "png")) as out:
        out.write(DATA[:10])
    assert "size 10 != " in store.check_hits(store.present({KEY: "png"}), full=False)[KEY]
