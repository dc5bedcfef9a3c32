"""Cost per image and the hosted-API comparison count like for like.

A night that mostly hits the cache: the hosted API is priced for the images generated this run
only (a hosted pipeline with its own cache would not pay for the hits either); the per-image
figures say what they divide by. Expected values are computed here from the fixture's ledger and
prices, not copied from the report.
"""

from __future__ import annotations

import json

import pytest
from synthetic_runs import make_synthetic_run

from pipeline.reports import generate_reports, load_pricing, rollup
from pipeline.reports.command import main as report_main

HITS = tuple(range(1, 12))  # 11 of 14 rows hit the cache


@pytest.fixture()
def prices():
    table = load_pricing().to_dict()
    table["device_hour"]["H100"] = 7.0
    table["hosted_api"]["per_image"] = {"ref-a": 0.04, "ref-b": 0.5}
    return table


@pytest.fixture()
def run(tmp_path, prices):
    return make_synthetic_run(tmp_path / "out", products=2, variants=7, cache_hits=HITS, pricing=prices)


def ledger_inputs(run_dir):
    """Generated images, cache hits and device cost, straight from ledger.jsonl."""
    records = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines() if line.strip()]
    attempts = [r for r in records if r["type"] == "attempt"]
    generated = len({a["row_id"] for a in attempts if a["outcome"] == "ok"})
    hits = len({a["row_id"] for a in attempts if a["outcome"] == "cache-hit"})
    loads = {r["actor"]: r["start"] for r in records if r["type"] == "actor-load"}
    stops = {r["actor"]: r["end"] for r in records if r["type"] == "actor-stop"}
    held_hours = sum(stops[a] - loads[a] for a in loads) / 3600
    return generated, hits, held_hours


def test_hosted_api_is_priced_for_generated_images_only(run, prices):
    generated, hits, held_hours = ledger_inputs(run.run_dir)
    assert (generated, hits) == (3, 11)
    cost = held_hours * prices["device_hour"]["H100"]

    outputs = generate_reports(run.run_dir, review=False, progress=False)
    figures = outputs.report["figures"]["cost"]
    assert figures["total"] == pytest.approx(cost, abs=2e-6)
    assert figures["per_generated_image"] == pytest.approx(cost / generated, abs=2e-6)
    assert figures["per_delivered_image"] == pytest.approx(cost / (generated + hits), abs=2e-6)
    # A hit saves the marginal cost of generating: the ok attempts' device-busy seconds, not the
    # run's load and idle time (paid whether or not rows hit the cache).
    records = [json.loads(line) for line in (run.run_dir / "ledger.jsonl").read_text().splitlines()]
    ok_busy_seconds = sum(r["phases"][p] for r in records if r.get("outcome") == "ok"
                          for p in ("text_encode", "context_encode", "denoise", "decode_latents"))
    marginal = ok_busy_seconds / 3600 * prices["device_hour"]["H100"] / generated
    assert figures["cache_saved"] == pytest.approx(hits * marginal, abs=2e-6)
    assert figures["cache_saved"] < hits * cost / generated
    for name, price in prices["hosted_api"]["per_image"].items():
        hosted = figures["hosted_api"][name]
        assert hosted["images"] == generated
        assert hosted["cost"] == pytest.approx(generated * price, abs=2e-9)
        assert hosted["difference"] == pytest.approx(generated * price - cost, abs=2e-6)

    md = outputs.files["md"].read_text()
    assert f"for the {generated} images generated this run at $0.0400 each" in md
    assert f"({generated} images generated this run; cache hits excluded)" in md
    assert f"({generated + hits} images delivered: {generated} generated + {hits} cache hits)" in md
    html = outputs.files["html"].read_text()
    assert f"for the {generated} images generated this run" in html and "cost per generated image" in html
    assert report_main([str(run.run_dir), "--verify"]) == 0


def test_rollup_hosted_and_per_image_figures_use_the_same_counts(tmp_path, prices):
    a = make_synthetic_run(tmp_path / "out", run_id="night-1", products=2, variants=7, cache_hits=HITS,
                           pricing=prices)
    b = make_synthetic_run(tmp_path / "out", run_id="night-2", products=1, variants=4, pricing=prices)
    (ga, ha, hours_a), (gb, hb, hours_b) = ledger_inputs(a.run_dir), ledger_inputs(b.run_dir)
    cost = (hours_a + hours_b) * prices["device_hour"]["H100"]
    total = rollup([a.run_dir, b.run_dir])["cost"]
    assert total["per_generated_image"] == pytest.approx(cost / (ga + gb), abs=2e-6)
    assert total["per_delivered_image"] == pytest.approx(cost / (ga + gb + ha + hb), abs=2e-6)
    for name, price in prices["hosted_api"]["per_image"].items():
        assert total["hosted_api"][name] == pytest.approx((ga + gb) * price, abs=2e-9)
