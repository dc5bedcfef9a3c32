"""Rows that share a failed row's cache key (followers) fail with it, in the ledger too.

Two manifest rows with identical source bytes under different image paths (and the same
instruction and seed) share one key: the first owns it and runs, the second waits. When the
owner fails for good, the results table, the ledger and the report built from the ledger all
count both rows failed with the reason, and a resumed run does not count them twice.
Integration: a local Ray cluster and the tiny-random model.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import TEST_MODEL, make_manifest, read_records, rewrite_manifest, start_ray

from pipeline import cli
from pipeline.reports.report_doc import analyse_run
from pipeline.runner import RunConfig, run_batch

OWNER, FOLLOWER, GOOD = 0, 1, 2


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()


def _config(manifest: Path, out: Path) -> RunConfig:
    return RunConfig(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu",
                     batch_size=4, actors=1, reports=True, progress=False,
                     retry_backoff_s=0.05)


def _manifest(folder: Path) -> Path:
    """Rows 0 and 1: one corrupt image under two names (same bytes, instruction and seed,
    so one key); row 2: a good image."""
    manifest = make_manifest(folder, products=3, variants=1)
    junk = b"\x89PNG\r\n\x1a\nthis is not an image"
    for name in ("corrupt_a.png", "corrupt_b.png"):
        (folder / "images" / name).write_bytes(junk)
    return rewrite_manifest(manifest, image={OWNER: "images/corrupt_a.png",
                                             FOLLOWER: "images/corrupt_b.png"})


def _attempts(run_dir: Path, row_index: int) -> list[dict]:
    return [r for r in read_records(run_dir)
            if r["type"] == "attempt" and r["row_index"] == row_index]


def _check_counts_agree(summary, capsys) -> None:
    """Terminal counts, results.parquet, the ledger's report and report --verify agree."""
    run_dir = summary.run_dir
    assert summary.counts == {"done": 1, "cache-hit": 0, "failed": 2, "not-run": 0}
    assert summary.status == "failed-rows" and summary.exit_code == 1
    rows = pq.read_table(summary.results).to_pylist()
    assert [r["status"] for r in rows] == ["failed", "failed", "done"]
    assert rows[OWNER]["key"] == rows[FOLLOWER]["key"]
    assert {rows[i]["error_class"] for i in (OWNER, FOLLOWER)} == {"bad-row"}
    assert "cannot be decoded" in rows[OWNER]["reason"]
    assert "cannot be decoded" in rows[FOLLOWER]["reason"]
    assert f"same key as row {OWNER}" in rows[FOLLOWER]["reason"]

    analysis = analyse_run(run_dir)
    figures = analysis.figures["rows"]
    assert (figures["done"], figures["failed"], figures["unfinished"]) == (1, 2, 0)
    follower = analysis.rows["p1-v0"]
    assert follower.status == "failed" and follower.error_class == "bad-row"
    assert follower.error == rows[FOLLOWER]["reason"]
    assert follower.busy_seconds == 0.0 and follower.cost == 0.0  # the owner's work, not its
    report = (run_dir / "report.md").read_text()
    header = "| total | done | cache hits | failed | retried | unfinished |"
    lines = report.splitlines()
    counts_line = lines[lines.index(header) + 2]
    assert counts_line.split("|")[1:5] == [" 3 ", " 1 ", " 0 ", " 2 "]
    assert counts_line.split("|")[6] == " 0 "  # unfinished

    capsys.readouterr()
    assert cli.main(["report", str(run_dir), "--verify"]) == 0
    assert "agrees" in capsys.readouterr().out


def test_followers_of_a_failed_row_are_recorded_failed(tmp_path: Path, capsys) -> None:
    manifest = _manifest(tmp_path / "m")
    out = tmp_path / "out"
    first = run_batch(_config(manifest, out))
    _check_counts_agree(first, capsys)

    owner, = _attempts(first.run_dir, OWNER)
    record, = _attempts(first.run_dir, FOLLOWER)
    assert owner["outcome"] == record["outcome"] == "failed-permanent"
    assert owner["actor"] is not None  # the owner ran on an actor ...
    assert record["actor"] is None and record["device_type"] is None  # ... the follower did not
    assert set(record["phases"].values()) == {0.0}
    assert record["key"] == owner["key"] and record["attempt"] == 1
    assert record["row_id"] == "p1-v0" and record["image"].endswith("corrupt_b.png")

    # A driver killed after writing results but before run-end: the same command resumes the
    # run and ends it as the uninterrupted run ended: both rows stay failed, with the reasons
    # recorded the first time (no new attempt), and each row is still counted once.
    ledger = first.run_dir / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    assert b'"type":"run-end"' in lines[-1]
    ledger.write_bytes(b"".join(lines[:-1]))
    resumed = run_batch(_config(manifest, out))
    assert resumed.run_id == first.run_id
    _check_counts_agree(resumed, capsys)
    assert resumed.counts["failed"] == 2 and resumed.status == "failed-rows"
    assert _attempts(resumed.run_dir, FOLLOWER) == [record]
    assert _attempts(resumed.run_dir, OWNER) == [owner]
    rows = pq.read_table(resumed.results).to_pylist()
    assert f"same key as row {OWNER}" in rows[FOLLOWER]["reason"]
    assert [r["outcome"] for r in _attempts(resumed.run_dir, GOOD)] == ["ok"]
