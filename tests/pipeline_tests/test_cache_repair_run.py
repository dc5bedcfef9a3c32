"""Whole runs (local Ray, tiny test model): a damaged cached output is recomputed, not served,
with the repair on its attempt, results row and sidecar; the store folder deleted mid-run does
not fail the rows after it, and a re-run delivers every row with its file."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from pipeline_helpers import make_manifest, read_records, run_once, wait_for


def _rows(summary: Any) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in pq.read_table(summary.results).to_pylist()}


def _intact(uri: str) -> bool:
    path = Path(uri)
    side = json.loads(path.with_suffix(".json").read_text())
    return path.is_file() and side["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_cached_output_is_recomputed_and_the_repair_recorded(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    out = tmp_path / "out"
    first = _rows(run_once(manifest, out))
    damaged = Path(first["p0-v0"]["output_uri"])
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: only the sha256 can tell
    damaged.write_bytes(bytes(data))

    summary = run_once(manifest, out)
    rows = _rows(summary)
    assert summary.exit_code == 0
    assert rows["p0-v0"]["status"] == "done" and rows["p1-v0"]["status"] == "cache-hit"
    assert damaged.read_bytes() != bytes(data)  # recomputed (equal pixels up to rounding)
    assert _intact(rows["p0-v0"]["output_uri"])
    notes = rows["p0-v0"]["notes"]
    note = notes.split("; ")[0]  # the repair comes first, then the model's own notes
    assert "damaged (sha256" in note and note.endswith(": recomputed")
    ok = [r for r in read_records(summary.run_dir) if r.get("outcome") == "ok"]
    assert [r["row_id"] for r in ok] == ["p0-v0"] and ok[0]["notes"] == notes
    assert json.loads(damaged.with_suffix(".json").read_text())["repaired"] == note


class _DeletesStore:
    """The test model, whose second batch first waits for an output of the first to be
    committed (the driver commits while this actor computes), then deletes the store."""

    def __init__(self, inner: Any, store: str) -> None:
        self._inner, self._store, self._calls = inner, store, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def edit(self, *args: Any, **kwargs: Any) -> Any:
        self._calls += 1
        if self._calls == 2:
            wait_for(lambda: any(Path(self._store, "objects").glob("*/*.png")), 120,
                     "the first batch's commit")
            shutil.rmtree(self._store)
        return self._inner.edit(*args, **kwargs)


class DeletingFactory:
    def __init__(self, store: Path) -> None:
        self.store = str(store)

    def __call__(self, model: str, device: str, dtype: Any) -> Any:
        from kontext_core import KontextEditor

        return _DeletesStore(KontextEditor.load(model, device=device, dtype=dtype), self.store)


def test_the_store_folder_deleted_mid_run_then_a_rerun_delivers_every_row(
        tmp_path: Path) -> None:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    manifest = make_manifest(tmp_path / "m", products=3, variants=2)  # 6 rows, 3 batches
    out = tmp_path / "out"
    first = run_once(manifest, out, editor_factory=DeletingFactory(out / "store"))
    rows = _rows(first)
    assert first.exit_code == 0, [r["reason"] for r in rows.values()]
    assert {r["status"] for r in rows.values()} == {"done"}
    vanished = {k for k, r in rows.items() if not Path(r["output_uri"]).is_file()}
    assert 0 < len(vanished) < 6  # some committed before the deletion, the rest after it

    again = run_once(manifest, out)
    rows = _rows(again)
    assert again.exit_code == 0
    assert {k for k, r in rows.items() if r["status"] == "done"} == vanished  # recomputed
    assert {r["status"] for k, r in rows.items() if k not in vanished} == {"cache-hit"}
    assert all(_intact(r["output_uri"]) for r in rows.values())
