"""Chained edits (#21) end to end on a shared Ray cluster: a three-step chain per product runs
in waves, each step on its parent's output; changing step 2 recomputes steps 2 and 3 only; a
kill mid-chain resumes with every row once; a failed parent fails its children alone."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from forked_cli_helpers import forked_cli
from hardening_helpers import attempts, check_run, cli_env, results_rows, run_dirs
from PIL import Image
from pipeline_helpers import TEST_MODEL, write_images

PRODUCTS = 3
STEPS = ("remove the background", "relight it warm", "add a soft shadow")


def chained_manifest(folder: Path, products: int = PRODUCTS,
                     sources: dict[int, str] | None = None) -> Path:
    """products x 3 steps: step 1 on the product photo, step k on step k-1's output."""
    names = write_images(folder / "images", products)
    rows = []
    for p, name in enumerate(names):
        for k, instruction in enumerate(STEPS, start=1):
            image = (sources or {}).get(p, f"images/{name}") if k == 1 else f"row:p{p}-s{k - 1}"
            rows.append({"row_id": f"p{p}-s{k}", "image": image, "instruction": instruction,
                         "seed": 10 + k, "product_id": f"p{p}", "variant": f"s{k}"})
    path = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def by_id(run_dir: Path) -> dict[str, dict[str, Any]]:
    return {r["row_id"]: r for r in results_rows(run_dir)}


@dataclass
class ShiftOutput:
    images: list[Image.Image]
    timings: dict[str, float] = field(default_factory=dict)
    truncated: list[bool] = field(default_factory=list)


class ShiftEditor:
    """Adds the row's seed to every pixel: a chain's last output is its source plus the sum of
    its steps' seeds exactly when each step was given its parent's output."""

    def edit(self, images: list[Image.Image], instructions: list[str], seeds: list[int],
             **_: Any) -> ShiftOutput:
        out = [Image.fromarray(((np.asarray(im, dtype=np.int64) + s) % 256).astype(np.uint8))
               for im, s in zip(images, seeds, strict=True)]
        return ShiftOutput(out, {}, [False] * len(images))


def shift_factory(model: str, device: str, dtype: Any) -> ShiftEditor:
    return ShiftEditor()


def test_each_step_edits_its_parents_output_and_keys_derive_from_the_parent(cluster, tmp_path):
    from ray import cloudpickle

    from pipeline.runner import RunConfig, run_batch

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    manifest = chained_manifest(tmp_path, products=2)
    summary = run_batch(RunConfig(manifest=str(manifest), out=str(tmp_path / "out"),
                                  model=TEST_MODEL, device="cpu", batch_size=2, actors=1,
                                  address=cluster.address, reports=False, progress=False),
                        editor_factory=shift_factory)
    assert summary.exit_code == 0 and summary.counts["done"] == 6
    rows = by_id(summary.run_dir)
    for p in range(2):
        source = np.asarray(Image.open(tmp_path / "images" / f"product_{p}.png").convert("RGB"),
                            dtype=np.int64)
        for k in (1, 2, 3):
            got = np.asarray(Image.open(rows[f"p{p}-s{k}"]["output_uri"]), dtype=np.int64)
            want = (source + sum(10 + j for j in range(1, k + 1))) % 256
            assert np.array_equal(got, want), f"p{p} step {k} did not edit its parent's output"
    records = {a["row_id"]: a for a in attempts(summary.run_dir) if a["outcome"] == "ok"}
    assert records["p0-s2"]["image"] == "row:p0-s1"  # the ledger says what the row edited
    # same instruction and seed on another parent: another key
    assert len({r["key"] for r in rows.values()}) == 6


def test_three_steps_run_end_to_end_and_step_2_change_recomputes_steps_2_and_3(cluster, drivers, tmp_path):
    manifest = chained_manifest(tmp_path)
    out = tmp_path / "out"
    first = forked_cli(drivers, manifest, out, cluster.address)
    assert first.returncode == 0, first.stderr
    run1 = run_dirs(out)[0]
    assert check_run(run1, 3 * PRODUCTS) == []
    rows1 = by_id(run1)
    assert Counter(r["status"] for r in rows1.values()) == {"done": 3 * PRODUCTS}

    frame = pd.read_parquet(manifest)
    frame.loc[frame["row_id"] == "p1-s2", "instruction"] = "relight it cold"
    frame.to_parquet(manifest, index=False)
    second = forked_cli(drivers, manifest, out, cluster.address)
    assert second.returncode == 0, second.stderr
    run2 = [d for d in run_dirs(out) if d != run1][0]
    rows2 = by_id(run2)
    recomputed = {rid for rid, r in rows2.items() if r["status"] == "done"}
    assert recomputed == {"p1-s2", "p1-s3"}
    assert all(rows2[rid]["status"] == "cache-hit" for rid in rows2 if rid not in recomputed)
    assert rows2["p1-s1"]["key"] == rows1["p1-s1"]["key"]
    assert rows2["p1-s3"]["key"] != rows1["p1-s3"]["key"]  # same instruction, new parent
    assert rows2["p0-s3"]["key"] == rows1["p0-s3"]["key"]


def test_kill_mid_chain_then_resume_leaves_every_row_once(cluster, drivers, tmp_path):
    manifest = chained_manifest(tmp_path)
    out = tmp_path / "out"
    # wave 1 holds the 3 step-1 rows: the 4th commit is step 2's first, killed before its
    # ledger line
    killed = forked_cli(drivers, manifest, out, cluster.address,
                     env=cli_env(KONTEXT_TEST_KILL_AT="after-store-commit:4"))
    assert killed.returncode == -9, killed.stderr
    run_dir = run_dirs(out)[0]
    oks = [a for a in attempts(run_dir) if a["outcome"] == "ok"]
    assert sorted(a["row_id"] for a in oks) == [f"p{p}-s1" for p in range(PRODUCTS)]

    resumed = forked_cli(drivers, manifest, out, cluster.address)
    assert resumed.returncode == 0, resumed.stderr
    assert run_dirs(out) == [run_dir]  # the same run, finished
    assert check_run(run_dir, 3 * PRODUCTS) == []
    rows = results_rows(run_dir)
    assert Counter(r["status"] for r in rows) == {"done": 3 * PRODUCTS}
    finals = Counter(a["row_index"] for a in attempts(run_dir) if a["outcome"] == "ok")
    assert finals == dict.fromkeys(range(3 * PRODUCTS), 1)
    assert sum(1 for a in attempts(run_dir) if a.get("recovered")) == 1


def test_failed_parent_fails_its_descendants_alone_naming_it(cluster, drivers, tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.png").write_bytes(b"this is not an image")
    manifest = chained_manifest(tmp_path, sources={0: "images/broken.png",
                                                   1: "images/missing.png"})
    out = tmp_path / "out"
    proc = forked_cli(drivers, manifest, out, cluster.address)
    assert proc.returncode == 1, proc.stderr
    rows = by_id(run_dirs(out)[0])
    for p in (0, 1):  # p0 fails in the actor (undecodable), p1 in planning (no file)
        assert rows[f"p{p}-s1"]["status"] == "failed"
        for k in (2, 3):
            row = rows[f"p{p}-s{k}"]
            assert row["status"] == "failed"
            assert f"parent row 'p{p}-s{k - 1}' failed" in row["reason"]
    assert "broken.png" in rows["p0-s3"]["reason"] or "image" in rows["p0-s3"]["reason"]
    assert all(rows[f"p2-s{k}"]["status"] == "done" for k in (1, 2, 3))
    assert check_run(run_dirs(out)[0], 3 * PRODUCTS) == []


def test_redo_of_chained_rows_edits_the_same_parent_output_and_reuses_the_parents(cluster,
                                                                                  tmp_path):
    """Rejecting a final step and a middle step: the redo's new rows edit their parents' outputs
    (carried in its manifest as cache hits, never recomputed) and come back as candidates."""
    from functools import partial

    from ray import cloudpickle

    from pipeline.redo import redo
    from pipeline.review.runs import load_review_rows, run_target
    from pipeline.review.service import ReviewSession
    from pipeline.runner import RunConfig, run_batch

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    manifest = chained_manifest(tmp_path, products=2)
    shifted = partial(run_batch, editor_factory=shift_factory)
    first = shifted(RunConfig(manifest=str(manifest), out=str(tmp_path / "out"), model=TEST_MODEL,
                              device="cpu", batch_size=2, actors=1, address=cluster.address,
                              reports=False, progress=False))
    assert first.exit_code == 0 and first.counts["done"] == 6
    target = run_target(first.run_dir)
    ReviewSession(target, "ann").decide("reject", row_ids=["p0-s3", "p1-s2"])

    plan, follow = redo(target, seeds=1, runner=shifted, address=cluster.address, progress=False,
                        reports=False)
    assert [r["row_id"] for r in plan.rows] == ["p0-s1", "p0-s2", "p0-s3~r1", "p1-s1", "p1-s2~r1"]
    assert (plan.new_images, plan.carriers, plan.slots) == (2, 3, 2)
    assert follow.exit_code == 0
    assert (follow.counts["cache-hit"], follow.counts["done"]) == (3, 2)  # carriers, new rows
    done = {a["row_id"] for a in attempts(follow.run_dir) if a["outcome"] == "ok"}
    assert done == {"p0-s3~r1", "p1-s2~r1"}  # no carrier reached the model
    rows = by_id(follow.run_dir)
    assert rows["p0-s3~r1"]["image"] == "row:p0-s2" and rows["p1-s2~r1"]["image"] == "row:p1-s1"
    before = by_id(first.run_dir)
    assert {i: rows[i]["key"] for i in ("p0-s1", "p0-s2", "p1-s1")} == \
        {i: before[i]["key"] for i in ("p0-s1", "p0-s2", "p1-s1")}
    for p, step, seed in ((0, 3, 13 + 1), (1, 2, 12 + 1)):  # a new seed: one above the used one
        source = np.asarray(Image.open(tmp_path / "images" / f"product_{p}.png").convert("RGB"),
                            dtype=np.int64)
        got = np.asarray(Image.open(rows[f"p{p}-s{step}~r1"]["output_uri"]), dtype=np.int64)
        want = (source + sum(10 + j for j in range(1, step)) + seed) % 256
        assert np.array_equal(got, want), f"p{p} step {step}'s redo did not edit its parent"
    # The review of the first run shows the two candidates for their slots, no carrier twice.
    review = load_review_rows(first.run_dir)
    assert [r.row_id for r in review] == [*before, "p0-s3~r1", "p1-s2~r1"]
    assert {r.row_id: r.redo_of for r in review[6:]} == {"p0-s3~r1": "p0-s3", "p1-s2~r1": "p1-s2"}
