"""Store, source digests, ledger and run-id resume: the pieces under the runner."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from pipeline import store as store_module
from pipeline.digests import SourceDigests
from pipeline.errors import BadRowError
from pipeline.ledger import LedgerWriter, read_ledger
from pipeline.resume import base_run_id, choose_run, read_history
from pipeline.store import CorruptObjectError, Store

KEY_A = "ab" + "0" * 62
KEY_B = "ab" + "1" * 62
KEY_C = "cd" + "2" * 62


def test_commit_writes_output_and_sidecar_atomically(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    uri = store.commit(KEY_A, "png", b"pixels", {"origin": {"run_id": "r"}})
    assert uri == str(tmp_path / "store" / "objects" / "ab" / f"{KEY_A}.png")
    assert Path(uri).read_bytes() == b"pixels"
    side = store.read_sidecar(KEY_A)
    assert side["sha256"] == hashlib.sha256(b"pixels").hexdigest()
    assert side["bytes"] == 6 and side["origin"] == {"run_id": "r"}
    # no temporary files are left next to the committed ones
    assert sorted(p.name for p in Path(uri).parent.iterdir()) == [f"{KEY_A}.json", f"{KEY_A}.png"]


def test_present_by_stat_and_by_listing_agree(tmp_path: Path, monkeypatch) -> None:
    store = Store(str(tmp_path / "store"))
    store.commit(KEY_A, "png", b"a", {})
    store.commit(KEY_C, "jpg", b"c", {})
    (tmp_path / "store" / "objects" / "ab" / f"{KEY_B}.png.tmp-dead").write_bytes(b"partial")
    wanted = {KEY_A: "png", KEY_B: "png", KEY_C: "png"}  # C was stored as jpg: not a match
    by_stat = store.present(wanted)
    monkeypatch.setattr(store_module, "_LIST_THRESHOLD", 0)
    by_listing = store.present(wanted)
    assert set(by_stat) == set(by_listing) == {KEY_A}
    assert by_listing[KEY_A].size == 1


def test_empty_output_is_not_present(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    store.commit(KEY_A, "png", b"data", {})
    Path(store.object_path(KEY_A, "png")).write_bytes(b"")
    assert store.present({KEY_A: "png"}) == {}


def test_read_verified_detects_corruption(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "store"))
    store.commit(KEY_A, "png", b"good bytes", {})
    assert store.read_verified(KEY_A, "png") == b"good bytes"
    Path(store.object_path(KEY_A, "png")).write_bytes(b"evil bytes")
    with pytest.raises(CorruptObjectError, match="does not match its sidecar"):
        store.read_verified(KEY_A, "png")
    assert not store.verify(KEY_A, "png")
    with pytest.raises(FileNotFoundError):
        store.read_verified(KEY_B, "png")


def test_store_works_on_a_non_local_pyarrow_filesystem(tmp_path: Path) -> None:
    """Object stores take the same path as local disks, minus the rename."""
    mock = pafs._MockFileSystem()
    store = Store("bucket/store")
    store.fs, store.base, store._atomic_rename, store._scheme = mock, "bucket/store", False, "mock"
    uri = store.commit(KEY_A, "webp", b"remote", {"x": 1})
    assert uri == f"mock://bucket/store/objects/ab/{KEY_A}.webp"
    assert store.read_verified(KEY_A, "webp") == b"remote"
    assert set(store.present({KEY_A: "webp", KEY_B: "webp"})) == {KEY_A}


def test_source_digests_are_indexed_and_rehashed_on_change(tmp_path: Path) -> None:
    src = tmp_path / "a.png"
    src.write_bytes(b"one")
    index = tmp_path / "index.sqlite"
    first = SourceDigests(index)
    assert first.digest_many([str(src)])[str(src)] == hashlib.sha256(b"one").hexdigest()
    assert first.hashed == 1
    first.close()
    again = SourceDigests(index)
    assert again.digest_many([str(src), str(src)])[str(src)] == hashlib.sha256(b"one").hexdigest()
    assert again.hashed == 0  # answered from the index: the file was not read
    src.write_bytes(b"two!")  # size changes
    os.utime(src, ns=(1, 1))
    assert again.digest_many([str(src)])[str(src)] == hashlib.sha256(b"two!").hexdigest()
    assert again.hashed == 1
    missing = again.digest_many([str(tmp_path / "nope.png")])[str(tmp_path / "nope.png")]
    assert isinstance(missing, BadRowError) and "not found" in str(missing)
    again.close()


def test_ledger_reader_skips_truncated_line_and_writer_cuts_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with LedgerWriter(path, "run-x") as ledger:
        ledger.write("run-start", rows_total=2)
        ledger.write("attempt", row_index=0, outcome="ok", key="k0")
    with open(path, "ab") as f:
        f.write(b'{"v":1,"type":"attempt","row_in')  # a kill mid-write
    assert [r["type"] for r in read_ledger(path)] == ["run-start", "attempt"]
    with LedgerWriter(path, "run-x") as ledger:
        ledger.write("run-end", status="complete")
    lines = path.read_bytes().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["v"] == 1 for line in lines)


def test_ledger_records_carry_schema_fields(tmp_path: Path) -> None:
    with LedgerWriter(tmp_path / "l.jsonl", "run-y") as ledger:
        rec = ledger.write("attempt", row_index=3)
    assert {"v", "type", "run_id", "ts"} <= set(rec) and rec["run_id"] == "run-y"
    with pytest.raises(ValueError, match="unknown ledger record type"):
        LedgerWriter(tmp_path / "l2.jsonl", "r").record("nonsense")


def test_run_id_is_deterministic_and_finished_runs_are_not_reopened(tmp_path: Path) -> None:
    base = base_run_id("d" * 64, {"model": "m", "steps": 4})
    assert base == base_run_id("d" * 64, {"steps": 4, "model": "m"})
    assert base != base_run_id("e" * 64, {"model": "m", "steps": 4})
    assert base != base_run_id("d" * 64, {"model": "m", "steps": 5})
    runs = tmp_path / "runs"
    run_id, history = choose_run(runs, base, None)
    assert run_id == base and not history.exists
    with LedgerWriter(runs / base / "ledger.jsonl", base) as ledger:  # killed: no run-end
        ledger.write("run-start")
        ledger.write("attempt", row_index=0, key="k", outcome="ok",
                     phases={"denoise": 1.5})
    run_id, history = choose_run(runs, base, None)
    assert run_id == base and history.exists and history.rows[0].final == "ok"
    assert history.rows[0].seconds == 1.5
    with LedgerWriter(runs / base / "ledger.jsonl", base) as ledger:
        ledger.write("run-end", status="complete")
    assert choose_run(runs, base, None)[0] == f"{base}-2"
    assert choose_run(runs, base, "mine")[0] == "mine"


def test_history_counts_model_attempts_not_cache_hits(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with LedgerWriter(path, "r") as ledger:
        ledger.write("run-start")
        ledger.write("attempt", row_index=1, key="k", outcome="retry-scheduled",
                     error_class="transient", error="io")
        ledger.write("attempt", row_index=1, key="k", outcome="failed-permanent",
                     error_class="transient", error="io")
        ledger.write("attempt", row_index=2, key="h", outcome="cache-hit")
        ledger.write("run-end", status="interrupted")
    history = read_history(path)
    assert history.rows[1].attempts == 2 and history.rows[1].error == "io"
    assert history.rows[2].attempts == 0 and history.rows[2].final == "cache-hit"
    assert history.resumable  # interrupted runs resume
