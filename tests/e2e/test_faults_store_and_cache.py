"""Faults around a run: the output store filling up, two runs racing on one cache, corrupted
cached outputs, an actor dying mid-batch, and just before the driver is killed (a node lost
mid-run: test_faults, on a two-node cluster of its own).

Each test checks the same promises as the crash suite: every row ends done, cache hit or
failed with a reason; each key is committed to the store once and every stored output
matches its sidecar; nothing half-written is ever under a final name."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from hardening_helpers import (
    attempts,
    check_run,
    check_store,
    cli_argv,
    cli_env,
    results_rows,
    run_dirs,
)
from PIL import Image
from pipeline_helpers import TEST_MODEL, make_manifest, ok_counts, read_records

from pipeline.runner import RunConfig, run_batch
from pipeline.store import Store


def _config(manifest: Path, out: Path, address: str, **kw: Any) -> RunConfig:
    base = dict(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu",
                batch_size=2, actors=1, address=address, reports=False, progress=False,
                retry_backoff_s=0.05)
    base.update(kw)
    return RunConfig(**base)


# -- the store runs out of space -------------------------------------------------------------
class _FailingStream:
    """An output stream on a full disk: half the bytes land, then ENOSPC."""

    def __init__(self, stream: Any, path: str) -> None:
        self._stream, self._path = stream, path

    def write(self, data: bytes) -> int:
        self._stream.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", self._path)

    def __enter__(self) -> _FailingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.close()


class FullDisk:
    """Wraps a store's pyarrow filesystem: the first ``allowed`` files are written, every
    later write fails with ENOSPC until ``full`` is cleared (space freed)."""

    def __init__(self, fs: Any, state: dict[str, Any]) -> None:
        self._fs, self._state = fs, state

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fs, name)

    def open_output_stream(self, path: str, *args: Any, **kwargs: Any) -> Any:
        stream = self._fs.open_output_stream(path, *args, **kwargs)
        if not self._state["full"]:
            return stream
        if self._state["allowed"] > 0:
            self._state["allowed"] -= 1
            return stream
        self._state["refused"] += 1
        return _FailingStream(stream, path)


def test_store_out_of_space_stops_cleanly_and_resumes_when_space_is_back(
        cluster, tmp_path: Path, monkeypatch) -> None:
    # 8 files = the text phase's 2 embeddings + 2 outputs, each with its sidecar
    state = {"full": True, "allowed": 8, "refused": 0}
    original_init = Store.__init__

    def init(self: Store, root: str) -> None:
        original_init(self, root)
        self.fs = FullDisk(self.fs, state)

    monkeypatch.setattr(Store, "__init__", init)
    manifest = make_manifest(tmp_path / "m", products=6, variants=2)  # 12 rows
    out = tmp_path / "out"

    first = run_batch(_config(manifest, out, cluster.address))
    assert state["refused"] >= 1
    assert first.status == "interrupted" and first.exit_code == 1
    assert "out of space" in first.stop_reason and "started again, the run resumes" in \
        first.stop_reason and "No space left on device" in first.stop_reason
    rows = results_rows(first.run_dir)
    assert len(rows) == 12
    assert [r["status"] for r in rows].count("done") == 2
    not_run = [r for r in rows if r["status"] == "not-run"]
    assert len(not_run) == 10 and all("out of space" in r["reason"] for r in not_run)
    # Nothing corrupt or half-written under a final name, and no temp file left behind.
    assert check_store(out) == []
    assert not list((out / "store").rglob("*.tmp-*"))
    objects = [p for p in (out / "store" / "objects").rglob("*.png")]
    assert len(objects) == 2
    records = read_records(first.run_dir)
    assert records[-1]["type"] == "run-end" and records[-1]["status"] == "interrupted"
    full = [r for r in records if r["type"] == "attempt" and r["outcome"] == "retry-scheduled"]
    assert len(full) == 1 and "No space left on device" in full[0]["error"]

    state["full"] = False  # space is back: the same command resumes the same run
    second = run_batch(_config(manifest, out, cluster.address))
    assert second.run_dir == first.run_dir and second.exit_code == 0
    assert second.counts["done"] == 12
    assert check_run(second.run_dir, 12) == [] and check_store(out) == []
    oks = Counter(r["key"] for r in attempts(second.run_dir) if r["outcome"] == "ok")
    assert len(oks) == 12 and set(oks.values()) == {1}  # the 2 stored rows were not redone


def test_store_out_of_space_in_the_text_phase_stops_cleanly_and_resumes(
        cluster, tmp_path: Path, monkeypatch) -> None:
    state = {"full": True, "allowed": 1, "refused": 0}  # not even the first embedding's pair
    original_init = Store.__init__

    def init(self: Store, root: str) -> None:
        original_init(self, root)
        self.fs = FullDisk(self.fs, state)

    monkeypatch.setattr(Store, "__init__", init)
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)  # 4 rows, 2 instructions
    out = tmp_path / "out"

    first = run_batch(_config(manifest, out, cluster.address))
    assert state["refused"] >= 1
    assert first.status == "interrupted" and first.exit_code == 1
    assert "out of space" in first.stop_reason and "text phase" in first.stop_reason
    rows = results_rows(first.run_dir)
    assert [r["status"] for r in rows] == ["not-run"] * 4
    assert all("out of space" in r["reason"] for r in rows)
    assert check_store(out) == [] and not list((out / "store").rglob("*.tmp-*"))
    phase = [r for r in read_records(first.run_dir) if r["type"] == "text-phase"]
    assert len(phase) == 1 and phase[0]["encoded"] == 2  # the encoder's time is still billed

    state["full"] = False
    second = run_batch(_config(manifest, out, cluster.address))
    assert second.run_dir == first.run_dir and second.exit_code == 0
    assert second.counts["done"] == 4 and check_run(second.run_dir, 4) == []


# -- the run folder runs out of space ----------------------------------------------------------
def test_ledger_on_a_full_disk_keeps_complete_lines_and_says_how_to_resume(tmp_path: Path,
                                                                          monkeypatch) -> None:
    from pipeline.errors import RunFolderFull
    from pipeline.ledger import LedgerWriter, read_ledger

    path = tmp_path / "run" / "ledger.jsonl"
    writer = LedgerWriter(path, "r1")
    writer.write("run-start", rows=3)
    real_write = LedgerWriter._write

    def half_then_enospc(self: LedgerWriter, payload: bytes) -> None:
        real_write(self, payload[: len(payload) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(LedgerWriter, "_write", half_then_enospc)
    for _ in range(2):  # and every later record is refused the same way, not half-written
        try:
            writer.write("run-end", status="complete", counts={})
        except RunFolderFull as exc:
            message = str(exc)
        else:
            raise AssertionError("a write on a full disk must raise RunFolderFull")
        assert path.read_bytes().endswith(b"\n")
        assert [r["type"] for r in read_ledger(path)] == ["run-start"]
    assert str(path.parent) in message and "No space left on device" in message
    assert "started again, the run resumes" in message
    writer.close()


def test_run_folder_out_of_space_stops_the_run_and_the_same_command_resumes(
        cluster, tmp_path: Path, monkeypatch) -> None:
    from pipeline.errors import RunFolderFull
    from pipeline.ledger import LedgerWriter

    state = {"appends_left": 6}
    real_write = LedgerWriter._write

    def write(self: LedgerWriter, payload: bytes) -> None:
        if state["appends_left"] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path))
        state["appends_left"] -= 1
        real_write(self, payload)

    monkeypatch.setattr(LedgerWriter, "_write", write)
    manifest = make_manifest(tmp_path / "m", products=6, variants=2)  # 12 rows
    out = tmp_path / "out"
    try:
        run_batch(_config(manifest, out, cluster.address))
    except RunFolderFull as exc:
        assert "out of space" in str(exc) and "started again, the run resumes" in str(exc)
    else:
        raise AssertionError("the run must stop with RunFolderFull")
    (run_dir,) = run_dirs(out)
    before = read_records(run_dir)
    raw = (run_dir / "ledger.jsonl").read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == len(before)  # complete lines only
    assert before[0]["type"] == "run-start" and before[-1]["type"] != "run-end"
    assert check_store(out) == []

    state["appends_left"] = 10**9  # space is back
    again = run_batch(_config(manifest, out, cluster.address))
    assert again.run_dir == run_dir and again.exit_code == 0 and again.counts["done"] == 12
    assert check_run(run_dir, 12) == [] and check_store(out) == []


# -- two runs on one cache -------------------------------------------------------------------
def test_two_concurrent_runs_on_one_cache_commit_each_key_once(cluster, drivers,
                                                               tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=4, variants=2)  # 8 rows
    out = tmp_path / "out"
    argv = cli_argv(manifest, out, cluster.address, "--no-report")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [drivers.start(argv, cli_env(), log) for log in logs]
    codes = [drivers.wait(p, log) for p, log in zip(procs, logs, strict=True)]
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]

    dirs = run_dirs(out)
    assert len(dirs) == 2  # the second took the next run id instead of sharing a ledger
    events: dict[str, list[tuple[str, bool]]] = {}
    for run_dir in dirs:
        assert check_run(run_dir, 8) == []
        for a in attempts(run_dir):
            if a["outcome"] in ("ok", "cache-hit"):
                wrote = a["outcome"] == "ok" and not a.get("already_stored")
                events.setdefault(a["key"], []).append((run_dir.name, wrote))
    assert len(events) == 8
    for key, seen in events.items():
        assert len(seen) == 2 and {name for name, _ in seen} == {d.name for d in dirs}, key
        assert sum(wrote for _, wrote in seen) == 1, (key, seen)  # committed exactly once
    assert check_store(out) == []
    uris = [[r["output_uri"] for r in results_rows(d)] for d in dirs]
    assert uris[0] == uris[1]


# -- corrupted cache -------------------------------------------------------------------------
def _corruptions() -> dict[str, Any]:
    def flip(obj: Path, side: Path, other: bytes) -> None:
        data = bytearray(obj.read_bytes())
        data[len(data) // 2] ^= 0xFF
        obj.write_bytes(bytes(data))

    def truncate(obj: Path, side: Path, other: bytes) -> None:
        obj.write_bytes(obj.read_bytes()[: obj.stat().st_size // 2])

    def empty(obj: Path, side: Path, other: bytes) -> None:
        obj.write_bytes(b"")

    def no_sidecar(obj: Path, side: Path, other: bytes) -> None:
        side.unlink()

    def garbage_sidecar(obj: Path, side: Path, other: bytes) -> None:
        side.write_text("{not json")

    def swapped(obj: Path, side: Path, other: bytes) -> None:
        obj.write_bytes(other)  # a valid image, but another key's

    return {"flipped byte": flip, "truncated": truncate, "emptied": empty,
            "sidecar deleted": no_sidecar, "sidecar garbage": garbage_sidecar,
            "another key's image": swapped}


def test_corrupted_cached_outputs_are_detected_by_hash_and_recomputed(cluster,
                                                                      tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=4, variants=2)  # 8 rows
    out = tmp_path / "out"
    first = run_batch(_config(manifest, out, cluster.address))
    rows = results_rows(first.run_dir)
    originals = {r["key"]: Path(r["output_uri"]).read_bytes() for r in rows}
    damaged = {}
    for (name, damage), row in zip(_corruptions().items(), rows, strict=False):
        obj = Path(row["output_uri"])
        other = originals[rows[-1]["key"]]
        damage(obj, obj.with_suffix(".json"), other)
        damaged[row["key"]] = name
    assert len(damaged) == 6

    second = run_batch(_config(manifest, out, cluster.address, verify_cache=True))
    after = {r["key"]: r for r in results_rows(second.run_dir)}
    for key, name in damaged.items():
        assert after[key]["status"] == "done", name  # detected and recomputed
    intact = [k for k in originals if k not in damaged]
    assert all(after[k]["status"] == "cache-hit" for k in intact)
    assert check_store(out) == [] and check_run(second.run_dir, 8) == []
    for key in originals:  # recomputed outputs are the same picture as the first time
        data = Path(after[key]["output_uri"]).read_bytes()
        side = json.loads(Path(after[key]["output_uri"]).with_suffix(".json").read_text())
        assert side["sha256"] == hashlib.sha256(data).hexdigest()
        now, before = (np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).astype(int)
                       for b in (data, originals[key]))
        assert np.abs(now - before).max() <= 1, damaged.get(key)


# -- an actor dies mid-batch -------------------------------------------------------------
def test_actor_dying_mid_batch_is_restarted_and_its_rows_retried(cluster,
                                                                  tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=3, variants=4)
    faults = [{"kind": "exit", "row_id": "p1-v2", "marker_dir": str(tmp_path / "faults")}]
    summary = run_batch(_config(manifest, tmp_path / "out", cluster.address, batch_size=4),
                        faults=faults)
    assert summary.exit_code == 0 and summary.counts["done"] == 12
    records = read_records(summary.run_dir)
    loads = [r for r in records if r["type"] == "actor-load"]
    assert [r["actor"] for r in loads] == ["editor-0", "editor-0"]
    first_pid, second_pid = loads[0]["pid"], loads[1]["pid"]
    assert first_pid != second_pid
    tried = [r for r in records if r["type"] == "attempt"]
    lost = [r for r in tried if r["outcome"] == "retry-scheduled"]
    assert "p1-v2" in {r["row_id"] for r in lost}
    assert {r["error_class"] for r in lost} == {"poisoned-device"}
    for r in lost:  # each row of the dead batch succeeded later, on the restarted actor
        ok = [a for a in tried if a["row_id"] == r["row_id"] and a["outcome"] == "ok"]
        assert len(ok) == 1 and ok[0]["pid"] == second_pid and ok[0]["attempt"] == 2
    assert set(ok_counts(summary.run_dir).values()) == {1}


# -- an actor dies, then the driver ----------------------------------------------------------
def test_actor_death_then_driver_kill_then_rerun_loses_nothing(cluster, drivers,
                                                               tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=5, variants=2)  # 10 rows
    out = tmp_path / "out"
    faults = [{"kind": "exit", "row_id": "p1-v0", "marker_dir": str(tmp_path / "faults")}]
    # 10 rows in batches of 2: the 4 batches without p1-v0 give at most 4 ok appends, so the
    # 5th comes after p1-v0's batch was lost and one of its rows retried on the new actor.
    env = cli_env(KONTEXT_BATCH_FAULTS=json.dumps(faults),
                  KONTEXT_TEST_KILL_AT="after-ledger-append:5")
    log = tmp_path / "driver.log"
    code = drivers.run(cli_argv(manifest, out, cluster.address, "--no-report"), env, log)
    assert code == -signal.SIGKILL, log.read_text()[-3000:]
    (run_dir,) = run_dirs(out)
    records = read_records(run_dir)
    loads = [r for r in records if r["type"] == "actor-load"]
    assert len({r["pid"] for r in loads}) == 2  # the actor died and Ray restarted it
    lost = [r for r in records if r["type"] == "attempt" and r["outcome"] == "retry-scheduled"]
    assert lost and {r["error_class"] for r in lost} == {"poisoned-device"}

    code = drivers.run(cli_argv(manifest, out, cluster.address, "--no-report"), cli_env(), log)
    assert code == 0, log.read_text()[-3000:]
    assert check_run(run_dir, 10) == [] and check_store(out) == []
    assert {r["status"] for r in results_rows(run_dir)} == {"done"}
