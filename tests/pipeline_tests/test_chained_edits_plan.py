"""Chained edits (#21) at plan time, without Ray: waves by dependency, keys from the parent's
key (a changed parent changes exactly its descendants), a parent failed in planning fails its
children naming it, and a dry run counts every step to generate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pipeline_helpers import TEST_MODEL, write_images

from pipeline.dry_run import plan_only
from pipeline.runner import RunConfig


def _manifest(folder: Path, step2: str = "relight", missing_source: bool = False) -> Path:
    write_images(folder / "images", 2)
    rows = []
    for p in range(2):
        source = "images/nope.png" if (missing_source and p == 1) else f"images/product_{p}.png"
        for k, text in enumerate(("cut out", step2, "shadow"), start=1):
            rows.append({"row_id": f"p{p}-s{k}", "instruction": text, "seed": k,
                         "image": source if k == 1 else f"row:p{p}-s{k - 1}"})
    path = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _plan(folder: Path, manifest: Path):
    from pipeline.digests import SourceDigests
    from pipeline.manifest_input import check_manifest
    from pipeline.model_info import resolve_model_info
    from pipeline.outcomes import Outcomes
    from pipeline.plan import plan_run
    from pipeline.resume import RunHistory
    from pipeline.run_config import derive_settings
    from pipeline.store import Store

    config = RunConfig(manifest=str(manifest), out=str(folder / "out"), model=TEST_MODEL,
                       device="cpu")
    checked = check_manifest(str(manifest))
    derived = derive_settings(config, resolve_model_info(TEST_MODEL), "cpu")
    outcomes = Outcomes(checked.rows_total)

    class Ledger:
        def record(self, type_, **fields):
            return {"type": type_, **fields}

        def append(self, records):
            pass

    plan = plan_run(checked, run_id="r", model=derived.model, defaults=derived.defaults,
                    digests=SourceDigests(None), store=Store(str(folder / "out" / "store")),
                    history=RunHistory(), ledger=Ledger(), outcomes=outcomes)
    return plan, outcomes


def test_rows_are_planned_in_waves_with_keys_from_their_parents(tmp_path):
    plan, outcomes = _plan(tmp_path, _manifest(tmp_path))
    assert sorted(t.row_id for t in plan.tasks) == ["p0-s1", "p1-s1"]
    assert [sorted(t.row_id for t in wave) for wave in plan.later] == [
        ["p0-s2", "p1-s2"], ["p0-s3", "p1-s3"]]
    assert plan.chain_parent == {1: 0, 2: 1, 4: 3, 5: 4}
    assert plan.chain_sources[1] == (outcomes.key[0], "png")
    assert len(set(outcomes.key)) == 6

    other = tmp_path / "changed"
    _, changed = _plan(other, _manifest(other, step2="relight cold"))
    # step 2 changed in both chains: steps 2 and 3 get new keys, step 1 keeps its own
    assert [i for i in range(6) if changed.key[i] == outcomes.key[i]] == [0, 3]


def test_parent_failed_in_planning_fails_its_descendants_naming_it(tmp_path):
    plan, outcomes = _plan(tmp_path, _manifest(tmp_path, missing_source=True))
    assert [outcomes.status[i] for i in range(3, 6)] == ["failed"] * 3
    assert "parent row 'p1-s1' failed" in outcomes.reason[4]
    assert "parent row 'p1-s2' failed" in outcomes.reason[5]
    assert outcomes.status[:3] == ["not-run"] * 3  # p0's chain is planned to run


def test_dry_run_counts_every_step_to_generate(tmp_path):
    manifest = _manifest(tmp_path)
    run = plan_only(RunConfig(manifest=str(manifest), out=str(tmp_path / "out"),
                              model=TEST_MODEL, device="cpu"))
    assert run.to_generate == 6
