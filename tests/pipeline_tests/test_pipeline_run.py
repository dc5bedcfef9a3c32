"""Integration: whole runs on a local Ray cluster with the tiny-random Kontext model."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from pipeline_helpers import (
    TEST_MODEL,
    CountingFactory,
    loads,
    make_manifest,
    ok_counts,
    ray_cluster_fixture,
    read_records,
    rewrite_manifest,
    run_config,
)

from pipeline import cli
from pipeline.runner import run_batch

ray_cluster = ray_cluster_fixture(autouse=True)


def results(summary) -> list[dict]:
    return pq.read_table(summary.results).to_pylist()


def test_forty_rows_then_all_hits_then_exactly_the_changed_row(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=10, variants=4)
    out, markers = tmp_path / "out", tmp_path / "loads"
    factory = CountingFactory(markers)

    first = run_batch(run_config(manifest, out, reports=True), editor_factory=factory)
    assert first.exit_code == 0 and first.counts["done"] == 40
    rows = results(first)
    assert len(rows) == 40 and {r["status"] for r in rows} == {"done"}
    assert [r["row_index"] for r in rows] == list(range(40))
    assert rows[7]["meta_sku"] == "SKU-001" and rows[7]["product_id"] == "p1"
    assert loads(markers) == 1  # one actor, one model load
    assert len({r["key"] for r in rows}) == 40
    assert (first.run_dir / "report.json").exists()  # the report builder was called

    # The stored output is exactly what the model makes for that row alone.
    from kontext_core import KontextEditor

    editor = KontextEditor.load(TEST_MODEL)
    row = rows[13]
    source = Image.open(manifest.parent / row["image"]).convert("RGB")
    expected = np.asarray(editor.edit([source], [row["instruction"]], [row["seed"]]).images[0])
    stored = Path(row["output_uri"]).read_bytes()
    got = np.asarray(Image.open(io.BytesIO(stored)).convert("RGB"))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1

    second = run_batch(run_config(manifest, out), editor_factory=factory)
    assert second.run_id == f"{first.run_id}-2"
    assert second.counts["cache-hit"] == 40 and second.exit_code == 0
    assert second.actors_started == 0 and loads(markers) == 1
    assert not [r for r in read_records(second.run_dir) if r["type"] == "actor-load"]
    assert [r["output_uri"] for r in results(second)] == [r["output_uri"] for r in rows]

    # Batch size and run id are not part of the key.
    third = run_batch(run_config(manifest, out, batch_size=2, run_id="other-run"),
                      editor_factory=factory)
    assert third.counts["cache-hit"] == 40 and loads(markers) == 1

    rewrite_manifest(manifest, instruction={17: "put the product on a wooden table"})
    fourth = run_batch(run_config(manifest, out), editor_factory=factory)
    assert fourth.run_id not in (first.run_id, second.run_id)
    assert fourth.counts == {"done": 1, "cache-hit": 39, "failed": 0, "not-run": 0}
    changed = results(fourth)[17]
    assert changed["status"] == "done" and changed["key"] != rows[17]["key"]
    assert ok_counts(fourth.run_dir) == {changed["key"]: 1}


def test_bad_rows_fail_alone_with_reasons_and_exit_code_1(tmp_path: Path, capsys) -> None:
    manifest = make_manifest(tmp_path / "m", products=4, variants=2)
    images = manifest.parent / "images"
    (images / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")
    rewrite_manifest(manifest, image={0: "images/corrupt.png", 2: "images/gone.png"},
                     instruction={5: "  "})
    code = cli.main(["run", str(manifest), "--out", str(tmp_path / "out"), "--model",
                     TEST_MODEL, "--device", "cpu", "--actors", "1", "--no-report",
                     "--quiet"])
    assert code == 1
    rows = pq.read_table(next((tmp_path / "out" / "runs").glob("*/results.parquet"))).to_pylist()
    failed = {r["row_index"]: r for r in rows if r["status"] == "failed"}
    assert set(failed) == {0, 2, 5}
    assert "cannot be decoded" in failed[0]["reason"]
    assert "not found" in failed[2]["reason"] and "gone.png" in failed[2]["reason"]
    assert "instruction is empty" in failed[5]["reason"]
    assert {r["error_class"] for r in failed.values()} == {"bad-row"}
    assert all(r["attempts"] == 1 for r in failed.values())  # never retried
    assert {r["status"] for i, r in enumerate(rows) if i not in failed} == {"done"}
    printed = capsys.readouterr().out
    assert "5 done" in printed and "3 failed" in printed and "results:" in printed


def _retried(run_dir: Path) -> dict[str, dict[str, str]]:
    """row_id -> {error_class: error} over its retry-scheduled attempts."""
    out: dict[str, dict[str, str]] = {}
    for r in read_records(run_dir):
        if r["type"] == "attempt" and r["outcome"] == "retry-scheduled":
            out.setdefault(r["row_id"], {})[r["error_class"]] = r["error"]
    return out


def test_transient_and_oom_errors_are_retried_and_the_run_succeeds(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=4, variants=4)
    marks = str(tmp_path / "faults")
    faults = [{"kind": "transient", "row_id": "p0-v1", "marker_dir": marks},
              {"kind": "oom", "row_id": "p2-v0", "marker_dir": marks}]
    summary = run_batch(run_config(manifest, tmp_path / "out"), faults=faults)
    assert summary.exit_code == 0 and summary.counts["done"] == 16
    records = [r for r in read_records(summary.run_dir) if r["type"] == "attempt"]
    retried = _retried(summary.run_dir)
    assert "injected transient" in retried["p0-v1"]["transient"]
    assert "out of memory" in retried["p2-v0"]["transient"].lower()
    oom = next(r for r in records if r["row_id"] == "p2-v0" and r["outcome"] == "retry-scheduled")
    # The rows of the batch that ran out of memory are retried in batches of at most half its
    # size. (Batches already queued on the actor before the OOM was seen keep their size.)
    oom_batch = [r for r in records if r["outcome"] == "retry-scheduled" and r["start"] == oom["start"]]
    oom_rows = {r["row_id"] for r in oom_batch}
    sizes: dict = {}
    for r in records:
        if r["outcome"] == "ok":
            sizes.setdefault((r["actor"], r["start"]), set()).add(r["row_id"])
    retried_batches = [rows for rows in sizes.values() if rows & oom_rows]
    assert retried_batches
    assert max(len(rows) for rows in retried_batches) <= max(1, len(oom_batch) // 2)
    assert ok_counts(summary.run_dir).most_common(1)[0][1] == 1


def test_sticky_device_error_restarts_the_actor_and_the_run_succeeds(tmp_path: Path) -> None:
    # A run of its own: the actor's exit also fails whatever else it had in flight, which would
    # blur the classes of other injected faults.
    manifest = make_manifest(tmp_path / "m", products=2, variants=4)
    faults = [{"kind": "sticky", "row_id": "p1-v2", "marker_dir": str(tmp_path / "faults")}]
    summary = run_batch(run_config(manifest, tmp_path / "out"), faults=faults)
    assert summary.exit_code == 0 and summary.counts["done"] == 8
    assert "poisoned-device" in _retried(summary.run_dir)["p1-v2"]
    # The sticky error made the actor exit; Ray restarted it and it loaded the model again.
    loads_ = [r for r in read_records(summary.run_dir) if r["type"] == "actor-load"]
    assert len(loads_) == 2 and len({r["pid"] for r in loads_}) == 2
    assert ok_counts(summary.run_dir).most_common(1)[0][1] == 1


def test_row_that_kills_its_actor_every_time_fails_alone(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=3)
    faults = [{"kind": "exit", "row_id": "p1-v1", "times": 99,
               "marker_dir": str(tmp_path / "faults")}]
    summary = run_batch(run_config(manifest, tmp_path / "out", max_attempts=2), faults=faults)
    assert summary.exit_code == 1
    rows = results(summary)
    failed = [r for r in rows if r["status"] == "failed"]
    assert [r["row_id"] for r in failed] == ["p1-v1"]
    assert failed[0]["error_class"] == "poisoned-device" and failed[0]["attempts"] == 2
    assert sum(r["status"] == "done" for r in rows) == 5


def test_corrupt_cached_output_is_recomputed_without_asking(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    out = tmp_path / "out"
    first = run_batch(run_config(manifest, out))
    victim = Path(results(first)[1]["output_uri"])
    good = victim.read_bytes()
    victim.write_bytes(good[:-5] + b"XXXXX")
    plain = run_batch(run_config(manifest, out))  # a local store hashes every hit
    assert plain.counts == {"done": 1, "cache-hit": 1, "failed": 0, "not-run": 0}
    assert results(plain)[1]["status"] == "done" and victim.read_bytes() != good[:-5] + b"XXXXX"
    checked = run_batch(run_config(manifest, out, verify_cache=True))
    assert checked.counts["cache-hit"] == 2


def test_unknown_model_and_bad_device_stop_before_ray_work(tmp_path: Path, capsys) -> None:
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    code = cli.main(["run", str(manifest), "--out", str(tmp_path / "out"), "--model",
                     "no-such-model", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "no-such-model" in err and "Fix:" in err
    assert not (tmp_path / "out").exists()  # nothing was written
    code = cli.main(["run", str(manifest), "--out", str(tmp_path / "out"), "--model",
                     TEST_MODEL, "--device", "cuda", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "no CUDA GPU" in err and "--device cpu" in err
    shutil.rmtree(manifest.parent / "images")
    manifest.write_bytes(b"not parquet at all")
    code = cli.main(["run", str(manifest), "--out", str(tmp_path / "out"), "--model",
                     TEST_MODEL, "--quiet"])
    assert code == 2 and "not a Parquet file" in capsys.readouterr().err


def test_step_cache_is_opt_in_and_keys_its_outputs_apart(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    out = tmp_path / "out"
    exact = run_batch(run_config(manifest, out, steps=6))
    fast = run_batch(run_config(manifest, out, steps=6, step_cache=1.0))  # reuse as much as allowed
    assert exact.exit_code == 0 and fast.exit_code == 0
    assert fast.counts["done"] == 4 and fast.counts.get("cache-hit", 0) == 0  # new keys: recomputed
    exact_rows, fast_rows = results(exact), results(fast)
    assert not {r["key"] for r in exact_rows} & {r["key"] for r in fast_rows}
    differ = [np.any(np.asarray(Image.open(a["output_uri"])) != np.asarray(Image.open(b["output_uri"])))
              for a, b in zip(exact_rows, fast_rows, strict=True)]
    assert all(differ)  # the approximation changes pixels, so it must never share a key with exact
    again = run_batch(run_config(manifest, out, steps=6, step_cache=1.0))
    assert again.counts.get("cache-hit", 0) == 4


def test_step_cache_flag_is_validated(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    assert cli.main(["run", str(manifest), "--out", str(tmp_path / "o"), "--model", TEST_MODEL,
                     "--step-cache", "3"]) == 2
