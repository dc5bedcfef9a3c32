"""The store folder deleted while a run goes on: later commits make its folders again (as a
fresh store would) instead of failing with FileNotFoundError, and outputs that vanished are
not served: planning finds them missing and recomputes their rows. No Ray."""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline_helpers import make_manifest
from test_pipeline_plan import plan

from pipeline.store import Store

KEY_A = "ab" + "0" * 62
KEY_B = "ab" + "1" * 62


def test_commits_after_the_store_folder_was_deleted_make_its_folders_again(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = Store(str(root))
    store.commit_once(KEY_A, "png", b"first", {})
    shutil.rmtree(root)  # e.g. a clean-up script, mid-run
    uri, wrote = store.commit_once(KEY_B, "png", b"second", {})  # same shard: cached folders
    assert wrote and Path(uri).read_bytes() == b"second"
    assert store.read_verified(KEY_B, "png") == b"second"
    assert (root / "locks" / "ab.lock").is_file()
    assert store.present({KEY_A: "png", KEY_B: "png"}).keys() == {KEY_B}


def test_a_rerun_recomputes_rows_whose_outputs_vanished(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    first, _, _ = plan(tmp_path, manifest, run_id="run-first")
    store = Store(str(tmp_path / "out/store"))
    for task in first.tasks[:2]:
        store.commit_once(task.key, task.ext, b"pixels " + task.key.encode(), {})
    shutil.rmtree(tmp_path / "out/store")
    for task in first.tasks[2:]:
        store.commit_once(task.key, task.ext, b"pixels " + task.key.encode(), {})
    again, outcomes, _ = plan(tmp_path, manifest, run_id="run-second")
    assert sorted(t.row_index for t in again.tasks) == sorted(t.row_index for t in first.tasks[:2])
    assert again.hits == 2
    for task in first.tasks[2:]:
        assert Path(outcomes.output_uri[task.row_index]).read_bytes() == b"pixels " + \
            task.key.encode()
