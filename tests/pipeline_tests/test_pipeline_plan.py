"""Planning without Ray: bad rows, file-level errors, cache hits, duplicates and resume."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from pipeline_helpers import make_manifest, read_records

from pipeline.cache import ModelSettings
from pipeline.digests import SourceDigests
from pipeline.errors import ConfigError
from pipeline.ledger import LedgerWriter, read_ledger
from pipeline.manifest_input import check_manifest
from pipeline.outcomes import Outcomes
from pipeline.plan import Plan, RowDefaults, plan_run
from pipeline.resume import read_history
from pipeline.store import Store

MODEL = ModelSettings(model_fingerprint="f" * 64, dtype="float32", numerics="1")
DEFAULTS = RowDefaults(steps=4, guidance=2.5, output_format="png")


def plan(tmp_path: Path, manifest: Path, run_id: str = "run-t",
         digests: SourceDigests | None = None) -> tuple[Plan, Outcomes, Path]:
    checked = check_manifest(str(manifest))
    outcomes = Outcomes(checked.rows_total)
    run_dir = tmp_path / "out" / "runs" / run_id
    history = read_history(run_dir / "ledger.jsonl")
    with LedgerWriter(run_dir / "ledger.jsonl", run_id) as ledger:
        ledger.write("run-start", rows_total=checked.rows_total)
        result = plan_run(checked, run_id=run_id, model=MODEL, defaults=DEFAULTS,
                          digests=digests or SourceDigests(None), store=Store(str(tmp_path / "out/store")),
                          history=history, ledger=ledger, outcomes=outcomes)
    return result, outcomes, run_dir


def test_row_problems_fail_alone_with_reasons(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=3, variants=2)
    frame = pd.read_parquet(manifest)
    frame.loc[1, "instruction"] = "   "
    frame.loc[2, "seed"] = -5
    frame.loc[3, "image"] = "images/missing.png"
    frame.loc[4, "row_id"] = "p0-v0"  # duplicate of row 0
    frame.to_parquet(manifest, index=False)
    result, outcomes, run_dir = plan(tmp_path, manifest)
    assert outcomes.status == ["not-run", "failed", "failed", "failed", "failed", "not-run"]
    assert sorted(t.row_index for t in result.tasks) == [0, 5]
    assert "instruction is empty" in outcomes.reason[1]
    assert "seed must be ≥ 0" in outcomes.reason[2]
    assert "not found" in outcomes.reason[3] and "missing.png" in outcomes.reason[3]
    assert "already used" in outcomes.reason[4]
    assert set(outcomes.error_class[1:5]) == {"bad-row"}
    # each failure is one failed-permanent attempt in the ledger, never retried
    failed = [r for r in read_records(run_dir) if r.get("outcome") == "failed-permanent"]
    assert sorted(r["row_index"] for r in failed) == [1, 2, 3, 4]
    assert outcomes.row_id[4] == "row-4"  # a duplicate id is not reused for the failed row


@pytest.mark.parametrize("breakage, message", [
    ("drop-seed", "missing required column 'seed'"),
    ("not-parquet", "is not a Parquet file"),
    ("unknown-column", "unknown column 'colour'"),
])
def test_file_level_problems_are_config_errors(tmp_path: Path, breakage: str,
                                               message: str) -> None:
    manifest = make_manifest(tmp_path / "m", products=1, variants=2)
    frame = pd.read_parquet(manifest)
    if breakage == "drop-seed":
        frame.drop(columns=["seed"]).to_parquet(manifest, index=False)
    elif breakage == "not-parquet":
        manifest.write_text("image,instruction,seed\n")
    else:
        frame.assign(colour="red").to_parquet(manifest, index=False)
    with pytest.raises(ConfigError, match=message):
        check_manifest(str(manifest))


def test_committed_rows_are_hits_and_duplicates_follow(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    frame = pd.read_parquet(manifest)
    dup = frame.iloc[[0]].assign(row_id="dup-of-0", product_id="other")
    pd.concat([frame, dup], ignore_index=True).to_parquet(manifest, index=False)
    first, outcomes, _ = plan(tmp_path, manifest, run_id="run-1")
    assert len(first.tasks) == 4 and list(first.followers) == [outcomes.key[0]]
    assert outcomes.key[4] == outcomes.key[0]
    store = Store(str(tmp_path / "out/store"))
    committed = [t for t in first.tasks if t.row_index in (0, 1)]
    for task in committed:
        store.commit(task.key, task.ext, b"png bytes", {})
    second, outcomes2, run_dir = plan(tmp_path, manifest, run_id="run-2")
    # rows 0 and 1 are hits, and so is row 4 (same key as row 0); rows 2 and 3 remain
    assert second.hits == 3 and sorted(t.row_index for t in second.tasks) == [2, 3]
    assert outcomes2.status == ["cache-hit", "cache-hit", "not-run", "not-run", "cache-hit"]
    hits = [r for r in read_records(run_dir) if r.get("outcome") == "cache-hit"]
    assert sorted(r["row_index"] for r in hits) == [0, 1, 4]
    # written compact (no actor, no phases, no end: implied for a hit) and read back expanded
    assert all("actor" not in r and "phases" not in r and "end" not in r for r in hits)
    expanded = [r for r in read_ledger(run_dir / "ledger.jsonl") if r.get("outcome") == "cache-hit"]
    assert sorted(r["row_index"] for r in expanded) == [0, 1, 4]
    assert all(r["actor"] is None and r["end"] == r["start"] and set(r["phases"].values()) == {0.0}
               and r["output_uri"] for r in expanded)


def test_resume_keeps_done_rows_and_recovers_unlogged_commits(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    first, outcomes, run_dir = plan(tmp_path, manifest, run_id="run-r")
    store = Store(str(tmp_path / "out/store"))
    t_logged, t_unlogged = first.tasks[0], first.tasks[1]
    with LedgerWriter(run_dir / "ledger.jsonl", "run-r") as ledger:
        store.commit(t_logged.key, "png", b"x", {"origin": {"run_id": "run-r",
                                                             "row_index": t_logged.row_index}})
        ledger.write("attempt", row_index=t_logged.row_index, key=t_logged.key,
                     outcome="ok", row_id=t_logged.row_id, phases={"denoise": 2.0})
    # committed by this run, then killed before the ledger line: no ok record
    store.commit(t_unlogged.key, "png", b"y", {"origin": {
        "run_id": "run-r", "row_index": t_unlogged.row_index, "phases": {"denoise": 1.0},
        "start": time.time(), "end": time.time()}})
    second, outcomes2, _ = plan(tmp_path, manifest, run_id="run-r")
    assert {t.row_index for t in second.tasks} == {t.row_index for t in first.tasks[2:]}
    assert outcomes2.status[t_logged.row_index] == "done"
    assert outcomes2.seconds[t_logged.row_index] == 2.0
    assert outcomes2.status[t_unlogged.row_index] == "done"
    oks = [r for r in read_records(run_dir) if r.get("outcome") == "ok"]
    assert sorted(r["key"] for r in oks) == sorted([t_logged.key, t_unlogged.key])
    assert [r.get("recovered") for r in oks if r["key"] == t_unlogged.key] == [True]
    assert not [r for r in read_records(run_dir) if r.get("outcome") == "cache-hit"]
