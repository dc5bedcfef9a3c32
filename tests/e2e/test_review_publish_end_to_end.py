"""The review loop end to end on real runs (tiny test model, local Ray): run -> decisions through
the review server's HTTP API -> publish -> feed.csv and files match the decisions -> redo of the
rejected image -> its candidate reviewed and published under the same name -> the next night
with one changed variant: only its new images wait for review, and publishing writes only them."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
from pipeline_helpers import TEST_MODEL, make_manifest, rewrite_manifest, start_ray
from review_helpers import call

from pipeline.publish import publish
from pipeline.redo import redo
from pipeline.review.runs import run_target
from pipeline.review.server import start_review_server
from pipeline.review.service import ReviewSession
from pipeline.runner import RunConfig, run_batch


@pytest.fixture(scope="module")
def ray_session():
    import ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()


def run(manifest: Path, out: Path):
    summary = run_batch(RunConfig(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu",
                                  batch_size=2, actors=1, reports=False, progress=False,
                                  retry_backoff_s=0.05))
    assert summary.exit_code == 0, summary
    return summary


def review(run_dir: Path, reviewer: str, decide) -> None:
    """Open the run's review server, let ``decide(port, token, rows)`` post decisions, close."""
    server = start_review_server(ReviewSession(run_target(run_dir), reviewer))
    try:
        status, page, _ = call(server.port, "/api/rows?limit=100", token=server.token)
        assert status == 200
        decide(server.port, server.token, {r["row_id"]: r for r in page["rows"]})
    finally:
        server.close()


def post(port: int, token: str, body: dict) -> dict:
    status, answer, _ = call(port, "/api/decisions", token=token, body=body)
    assert status == 200, answer
    return answer


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_run_review_publish_redo_and_the_next_night(tmp_path, ray_session):
    out, shop = tmp_path / "out", tmp_path / "shop"
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)  # rows p0-v0, p0-v1, p1-v0, p1-v1
    night1 = run(manifest, out)

    def first_review(port, token, rows):
        assert sorted(rows) == ["p0-v0", "p0-v1", "p1-v0", "p1-v1"]
        assert all(r["decision"] is None and r["reviewable"] for r in rows.values())
        assert post(port, token, {"decision": "approve", "filter": {"product": "p1"}})["recorded"] == 2
        post(port, token, {"decision": "approve", "rows": ["p0-v0"]})
        post(port, token, {"decision": "reject", "rows": ["p0-v1"], "note": "background too dark"})
    review(night1.run_dir, "ana", first_review)

    result = publish(run_target(night1.run_dir), str(shop))
    assert sorted(result.written) == ["p0/v0.png", "p1/v0.png", "p1/v1.png"]
    outputs = {r["row_id"]: r for r in night1_rows(night1.run_dir)}
    files = files_under(shop)
    assert sorted(files) == ["feed.csv", "p0/v0.png", "p1/v0.png", "p1/v1.png", "published.json"]
    for rel, row_id in (("p0/v0.png", "p0-v0"), ("p1/v0.png", "p1-v0"), ("p1/v1.png", "p1-v1")):
        assert files[rel] == Path(outputs[row_id]["output_uri"]).read_bytes()
    feed = list(csv.DictReader(files["feed.csv"].decode().splitlines()))
    assert [(f["Handle"], f["Image Src"], f["Image Position"]) for f in feed] == [
        ("p0", "p0/v0.png", "1"), ("p1", "p1/v0.png", "1"), ("p1", "p1/v1.png", "2")]

    # Redo the rejected image with a new seed; its candidate comes back to night 1's review.
    plan, follow_up = redo(run_target(night1.run_dir), seeds=1, progress=False, batch_size=2)
    assert follow_up.exit_code == 0 and [r["row_id"] for r in plan.rows] == ["p0-v1~r1"]
    assert plan.rows[0]["seed"] == 1002 and plan.rows[0]["variant"] == "v1"

    def review_candidate(port, token, rows):
        candidate = rows["p0-v1~r1"]
        assert candidate["redo_of"] == "p0-v1" and candidate["decision"] is None
        assert candidate["key"] != rows["p0-v1"]["key"]
        waiting = call(port, "/api/rows?decision=none", token=token)[1]
        assert [r["row_id"] for r in waiting["rows"]] == ["p0-v1~r1"]
        assert call(port, f"/api/rows?limit=1&offset={candidate['i']}", token=token)[0] == 200
        assert call(port, f"/img/out/{candidate['i']}", token=token)[0] == 200
        post(port, token, {"decision": "approve", "rows": ["p0-v1~r1"]})
    review(night1.run_dir, "ana", review_candidate)

    before = files_under(shop)
    result = publish(run_target(night1.run_dir), str(shop))
    assert result.written == ["p0/v1.png"] and result.unchanged == ["p0/v0.png", "p1/v0.png", "p1/v1.png"]
    candidate_out = [r for r in night1_rows(follow_up.run_dir) if r["row_id"] == "p0-v1~r1"][0]
    assert (shop / "p0" / "v1.png").read_bytes() == Path(candidate_out["output_uri"]).read_bytes()
    assert {k: v for k, v in files_under(shop).items() if k in before and k.endswith(".png")} == \
        {k: v for k, v in before.items() if k.endswith(".png")}
    entry = [e for e in json.loads((shop / "published.json").read_text())["images"] if e["path"] == "p0/v1.png"][0]
    assert entry["redo_of"] == "p0-v1" and entry["seed"] == 1002

    # The next night: variant v1 gets a new instruction; only its two images are new.
    rewrite_manifest(manifest, instruction={1: "put the product on a green lawn", 3: "put the product on a green lawn"})
    night2 = run(manifest, out)
    assert night2.counts == {"done": 2, "cache-hit": 2, "failed": 0, "not-run": 0}

    def second_review(port, token, rows):
        waiting = call(port, "/api/rows?decision=none", token=token)[1]["rows"]
        assert sorted(r["row_id"] for r in waiting) == ["p0-v1", "p1-v1"]
        assert all(not r["carried"] for r in waiting)
        carried = [r for r in rows.values() if r["carried"]]
        assert sorted(r["row_id"] for r in carried) == ["p0-v0", "p1-v0"]
        assert all(r["decision"]["decision"] == "approve" and r["decision"]["reviewer"] == "ana" for r in carried)
        post(port, token, {"decision": "approve", "filter": {"decision": "none"}})
    review(night2.run_dir, "bo", second_review)

    before = files_under(shop)
    result = publish(run_target(night2.run_dir), str(shop))
    assert sorted(result.written + result.overwritten) == ["p0/v1.png", "p1/v1.png"]
    assert sorted(result.unchanged) == ["p0/v0.png", "p1/v0.png"]
    after = files_under(shop)
    changed = sorted(k for k in after if after[k] != before.get(k))
    assert changed == ["p0/v1.png", "p1/v1.png", "published.json"]  # feed.csv rows are the same
    night2_out = {r["row_id"]: r for r in night1_rows(night2.run_dir)}
    assert after["p1/v1.png"] == Path(night2_out["p1-v1"]["output_uri"]).read_bytes()
    images = {e["path"]: e for e in json.loads(after["published.json"])["images"]}
    assert images["p1/v1.png"]["sha256"] == hashlib.sha256(after["p1/v1.png"]).hexdigest()
    assert images["p1/v1.png"]["reviewer"] == "bo" and images["p0/v0.png"]["reviewer"] == "ana"
    assert publish(run_target(night2.run_dir), str(shop)).wrote_anything is False


def night1_rows(run_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(run_dir / "results.parquet").to_pylist()
