"""Faults: the driver killed mid-run, a node lost mid-run (an actor dying mid-batch is in
test_faults_store_and_cache, on its shared cluster)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
from hardening_helpers import check_run, check_store, remove_node_after_it_commits
from pipeline_helpers import (
    REPO,
    TEST_MODEL,
    cli_run_process,
    make_manifest,
    ok_counts,
    ok_lines,
    read_records,
    run_in_background,
    short_tmp,
    wait_for,
)

from pipeline.runner import RunConfig


def _sleep_faults(manifest: Path, marker_dir: Path, seconds: float) -> list[dict]:
    """Slow every row down once (a batch sleeps per row it holds) so a test can act mid-run."""
    ids = pq.read_table(manifest, columns=["row_id"]).column("row_id").to_pylist()
    return [{"kind": "sleep", "row_id": rid, "seconds": seconds, "marker_dir": str(marker_dir)}
            for rid in ids]


def test_driver_sigkill_then_rerun_finishes_every_row_once(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=6, variants=4)  # 24 rows
    out = tmp_path / "out"
    first = cli_run_process(manifest, out, _sleep_faults(manifest, tmp_path / "faults", 0.3))
    try:
        wait_for(lambda: ok_lines(out) >= 6 or first.poll() is not None, 240,
                  "6 committed rows")
        assert first.poll() is None, first.stdout.read().decode()[-2000:]
        os.killpg(first.pid, signal.SIGKILL)  # the driver and everything it started
    finally:
        first.wait(timeout=60)
    run_dir = next((out / "runs").iterdir())
    assert not [r for r in read_records(run_dir) if r["type"] == "run-end"]
    done_before = sum(ok_counts(run_dir).values())
    assert 6 <= done_before < 24

    second = cli_run_process(manifest, out)
    log = second.communicate(timeout=300)[0].decode()
    assert second.returncode == 0, log[-3000:]
    assert [p.name for p in (out / "runs").iterdir()] == [run_dir.name]  # same run resumed
    rows = pq.read_table(run_dir / "results.parquet").to_pylist()
    assert len(rows) == 24 and {r["status"] for r in rows} == {"done"}
    oks = ok_counts(run_dir)
    assert set(oks) == {r["key"] for r in rows} and set(oks.values()) == {1}
    records = read_records(run_dir)
    assert sum(r["type"] == "run-start" for r in records) == 2
    # The audited (strict) ledger reader of the reports accepts the resumed ledger.
    from pipeline.reports.ledger import load_ledger as strict_read

    assert len(strict_read(run_dir).records) == len(records)


def test_losing_a_node_mid_run_still_completes_every_row_once(tmp_path: Path) -> None:
    import ray
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False, "object_store_memory": 100 * 1024 ** 2})
    worker = cluster.add_node(num_cpus=1, object_store_memory=100 * 1024 ** 2)
    try:
        manifest = make_manifest(tmp_path / "m", products=4, variants=4)  # 16 rows
        out = tmp_path / "out"
        # The runner joins the existing cluster itself (--address), as on a real cluster.
        config = RunConfig(manifest=str(manifest), out=str(out), model=TEST_MODEL,
                           address=cluster.address, device="cpu", batch_size=2, actors=2,
                           reports=False, progress=False, retry_backoff_s=0.05)
        faults = _sleep_faults(manifest, tmp_path / "faults", 0.25)
        driver, outcome = run_in_background(config, faults)
        remove_node_after_it_commits(cluster, worker, out, driver, outcome)
        driver.join(timeout=300)
        assert not driver.is_alive() and "error" not in outcome, outcome
        summary = outcome["summary"]
        assert summary.exit_code == 0 and summary.counts["done"] == 16
        # Every row ends once: results, ledger and store agree (hardening_helpers.check_run).
        assert check_run(summary.run_dir, 16) == [] and check_store(out) == []
        records = read_records(summary.run_dir)
        lost = [r for r in records if r["type"] == "attempt"
                and r["outcome"] == "retry-scheduled"]
        assert lost and all("mid-batch" in r["error"] for r in lost)
        assert set(ok_counts(summary.run_dir).values()) == {1}
        assert not ray.is_initialized()  # the runner disconnected; the cluster lives on
        assert len(cluster.list_all_nodes()) == 1
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_config_errors_exit_2_before_ray_starts(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=1, variants=2)
    ray_tmp = Path(short_tmp("kbcfg"))
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1",
           "RAY_TMPDIR": str(ray_tmp)}
    env.pop("KONTEXT_BATCH_FAULTS", None)
    base = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out",
            str(tmp_path / "out"), "--quiet"]
    for extra, message in ((["--model", "no-such-model"], "no-such-model"),
                           (["--model", TEST_MODEL, "--batch-size", "0"], "must be at least 1")):
        done = subprocess.run(base + extra, cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2, done.stderr[-2000:]
        assert message in done.stderr
        assert list(ray_tmp.iterdir()) == []  # no Ray session was ever created
