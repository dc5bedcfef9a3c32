"""A whole run whose source stays unreadable through planning's retries: the run stops
resumable (exit 1, saying why), and the same command later finishes exactly those rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import TEST_MODEL, make_manifest, start_ray
from test_plan_transient import FLAKY, Faults

from pipeline import digests as digests_module
from pipeline.runner import RunConfig, run_batch


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_unreadable_sources_stop_the_run_resumable_and_a_rerun_finishes_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    config = RunConfig(manifest=str(manifest), out=str(tmp_path / "out"), model=TEST_MODEL, device="cpu",
                       batch_size=2, actors=1, reports=False, progress=False, retry_backoff_s=0.05)
    real_init = digests_module.SourceDigests.__init__
    monkeypatch.setattr(digests_module.SourceDigests, "__init__",
                        lambda self, *a, **kw: real_init(self, *a, **{**kw, "backoff_s": 0.001}))
    Faults(monkeypatch, stat=None, read=None)
    first = run_batch(config)
    assert first.exit_code == 1 and first.status == "interrupted"
    assert "2 source image(s) could not be read" in first.stop_reason
    rows = pq.read_table(first.results).to_pylist()
    assert [r["status"] for r in rows] == ["done", "done", "not-run", "not-run"]
    assert all(FLAKY in r["reason"] for r in rows[2:])

    monkeypatch.undo()  # the storage is back
    second = run_batch(config)
    assert second.run_id == first.run_id  # the same run, resumed
    assert second.exit_code == 0 and second.status == "complete"
    rows = pq.read_table(second.results).to_pylist()
    assert [r["status"] for r in rows] == ["done"] * 4
