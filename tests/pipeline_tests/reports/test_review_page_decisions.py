"""The static review.html (offline, read-only) shows the decisions of OUT/decisions.jsonl as they
were when the page was built, and counts them, carried cache hits included."""

from __future__ import annotations

import json
import re

from review_helpers import SCRIPT, session, synthetic

from pipeline.reports import generate_reports


def test_the_static_page_shows_and_counts_decisions(tmp_path):
    run = synthetic(tmp_path / "out")  # row 1 failed, row 2 a cache hit
    s = session(run, reviewer="alice")
    s.decide("approve", row_ids=["p0-v0", "p0-v2"], note="looks good " + SCRIPT)
    s.decide("reject", row_ids=["p0-v3"], note="halo")
    generate_reports(run.run_dir, progress=False)
    html = (run.run_dir / "review.html").read_text()
    assert '<p class="decision decision-approve">approve by alice: looks good &lt;script&gt;' in html
    assert '<p class="decision decision-reject">reject by alice: halo</p>' in html
    assert html.count('<p class="decision decision-none">waiting for review</p>') == 8
    summary = re.search(r'<div class="summary">(.*?)</div>', html, re.S).group(1)
    for item in ("2 approved", "1 rejected", "8 waiting for review", "1 carried with an earlier approval"):
        assert f"<span>{item}</span>" in summary, item
    data = json.loads(re.search(r'id="review-data">(.*?)</script>', html, re.S).group(1))
    by_id = {r["row_id"]: r for r in data["rows"]}
    assert by_id["p0-v3"]["decision"]["decision"] == "reject" and by_id["p1-v0"]["decision"] is None
    assert "<script>document" not in html  # the note is escaped, in the tile and the JSON
