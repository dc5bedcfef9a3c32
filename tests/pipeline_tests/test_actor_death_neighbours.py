"""An actor killed by one batch charges that batch only, not the batch queued behind it
(real Ray, real actors: the start mark travels from the actor to the driver's tracker)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import TEST_MODEL, make_manifest, read_records, start_ray

from pipeline.runner import RunConfig, run_batch


@pytest.fixture
def local_ray():
    import ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_the_batch_queued_behind_a_killing_batch_keeps_its_only_attempt(tmp_path: Path,
                                                                        local_ray) -> None:
    manifest = make_manifest(tmp_path / "m", products=3, variants=2)  # 6 rows, 3 batches
    faults = [{"kind": "exit", "row_id": "p0-v1", "marker_dir": str(tmp_path / "faults")}]
    summary = run_batch(RunConfig(manifest=str(manifest), out=str(tmp_path / "out"),
                                  model=TEST_MODEL, device="cpu", batch_size=2, actors=1,
                                  in_flight_per_actor=2, max_attempts=1, reports=False,
                                  progress=False, retry_backoff_s=0.05), faults=faults)
    records = read_records(summary.run_dir)
    assert [r["type"] for r in records].count("actor-load") == 2  # it died and came back
    attempts = [r for r in records if r["type"] == "attempt"]
    failed = {r["row_id"]: r for r in attempts if r["outcome"] == "failed-permanent"}
    # only the batch that held the fault row was running: it alone is charged
    assert set(failed) == {"p0-v0", "p0-v1"}
    for r in failed.values():
        assert "died mid-batch" in r["error"] and "retried" not in r["error"], r["error"]
    others = [r for r in attempts if r["row_id"] not in failed]
    assert sorted((r["row_id"], r["attempt"], r["outcome"]) for r in others) == [
        (f"p{p}-v{v}", 1, "ok") for p in (1, 2) for v in (0, 1)]
    results = {r["row_id"]: r for r in pq.read_table(summary.run_dir / "results.parquet")
               .to_pylist()}
    assert [results[f"p{p}-v{v}"]["status"] for p in range(3) for v in range(2)] == [
        "failed", "failed", "done", "done", "done", "done"]
    assert summary.exit_code == 1
