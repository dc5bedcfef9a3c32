"""`review JOB --date D` and `publish JOB --date D`: a job's night is OUT/runs/<job>-<date>
with OUT the spec's output; the decisions log is OUT/decisions.jsonl across nights."""

from __future__ import annotations

import pytest
from review_helpers import session, synthetic

from jobs.cli import main
from pipeline.review.runs import RunNotFound, resolve_target
from pipeline.review.service import ReviewSession

SPEC = """name: shop
manifest: manifest.parquet
model: kontext-tiny
output: out
"""


@pytest.fixture
def job(tmp_path):
    spec = tmp_path / "shop.yaml"
    spec.write_text(SPEC)
    return spec


def test_a_night_resolves_to_the_jobs_run_and_shares_the_decisions_log(tmp_path, job):
    out = tmp_path / "out"
    first = synthetic(out, run_id="shop-2026-11-01", failed=(), cache_hits=())
    session(first).decide("approve", row_ids=["p0-v0"])
    synthetic(out, run_id="shop-2026-11-02", failed=(), cache_hits=tuple(range(12)))
    target = resolve_target(str(job), "2026-11-02")
    assert target.run_dir == out / "runs" / "shop-2026-11-02" and target.out_dir == out
    night = ReviewSession(target, "bob")
    page = night.query({"decision": "approve"}, 0, 50)
    assert [r["row_id"] for r in page["rows"]] == ["p0-v0"] and page["rows"][0]["carried"]
    assert main(["publish", str(job), "--date", "2026-11-02", "--to", str(tmp_path / "shop")]) == 0
    assert (tmp_path / "shop" / "P000" / "bg-0.png").is_file()


def test_a_night_that_did_not_run_is_named(tmp_path, job, capsys):
    with pytest.raises(RunNotFound, match=r"job shop has no finished run for 2026-11-05 .*job run"):
        resolve_target(str(job), "2026-11-05")
    assert main(["review", str(job), "--date", "2026-11-05"]) == 2
    err = capsys.readouterr().err
    assert "kontext-batch review: error: job shop has no finished run for 2026-11-05" in err
    assert "Traceback" not in err
