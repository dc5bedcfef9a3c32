"""A review that tells the truth: results.parquet gets cost and flags (beside truncated and
notes), the page and its summary show flags, cut instructions and input notes, the end-of-run
summary counts them, and report.json/md/html give the cost per product and per variant."""

from __future__ import annotations

import json
import math
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from review_helpers import session, synthetic

from pipeline.records import CLIP_TRUNCATED_NOTE
from pipeline.reports import generate_reports
from pipeline.reports.results_columns import summary_lines

EXIF_NOTE = "EXIF orientation 6 applied"


def add_input_columns(run_dir, truncated: dict[int, bool], notes: dict[int, str]) -> None:
    """results.parquet as the runner writes it: with truncated and notes columns."""
    path = run_dir / "results.parquet"
    table = pq.read_table(path)
    n = table.num_rows
    table = table.append_column("truncated", pa.array([truncated.get(i) for i in range(n)], pa.bool_()))
    table = table.append_column("notes", pa.array([notes.get(i) for i in range(n)], pa.string()))
    pq.write_table(table, path)


def results(run_dir) -> dict[str, dict]:
    return {r["row_id"]: r for r in pq.read_table(run_dir / "results.parquet").to_pylist()}


@pytest.fixture
def run(tmp_path):
    run = synthetic(tmp_path / "out", failed=(1,), cache_hits=(2,), unchanged=(3,), spread=(5,))
    add_input_columns(run.run_dir, {4: True}, {0: EXIF_NOTE, 6: CLIP_TRUNCATED_NOTE})
    generate_reports(run.run_dir, progress=False)
    return run


def test_results_get_cost_and_flags_columns(run):
    rows = results(run.run_dir)
    report = json.loads((run.run_dir / "report.json").read_text())
    assert rows["p0-v3"]["flags"] == ["unchanged"] and "spread" in rows["p1-v1"]["flags"]
    assert rows["p0-v0"]["flags"] == [] and rows["p0-v1"]["flags"] == ["failed"]
    assert rows["p0-v2"]["flags"] is None  # a cache hit no review of this OUT judged
    assert rows["p0-v2"]["cost"] == 0.0 and rows["p0-v0"]["cost"] > 0
    assert rows["p0-v0"]["notes"] == EXIF_NOTE and rows["p1-v0"]["truncated"] is True
    per_row = sum(r["cost"] for r in rows.values())
    direct = sum(g["direct"] for g in report["figures"]["cost"]["by_product"].values())
    assert math.isclose(per_row, direct, rel_tol=1e-6)


def test_report_gives_cost_per_product_and_variant(run):
    report = json.loads((run.run_dir / "report.json").read_text())
    cost = report["figures"]["cost"]
    assert sorted(cost["by_product"]) == ["P000", "P001", "P002"]
    assert sorted(cost["by_variant"]) == ["bg-0", "bg-1", "bg-2", "bg-3"]
    p0 = cost["by_product"]["P000"]
    assert (p0["rows"], p0["generated"], p0["failed"]) == (3, 2, 1)  # row 2 was a cache hit
    for table in (cost["by_product"], cost["by_variant"]):
        assert math.isclose(sum(g["share_of_total"] for g in table.values()), cost["total"], rel_tol=1e-6)
    md = (run.run_dir / "report.md").read_text()
    assert "## Cost per product" in md and "## Cost per variant" in md
    assert re.search(r"\| P000 \| 3 \| 2 \| 1 \| \$", md)
    assert "Cost per variant" in (run.run_dir / "report.html").read_text()


def test_the_page_and_its_summary_show_flags_cuts_and_notes(run):
    html = (run.run_dir / "review.html").read_text()
    summary = re.search(r'<div class="summary">(.*?)</div>', html, re.S).group(1)
    assert "<span>1 unchanged</span>" in summary and "<span>1 spread</span>" in summary
    assert "1 instruction cut at T5&#x27;s limit" in summary and "with input notes" in summary
    assert f"<strong>input:</strong> {EXIF_NOTE}" in html


def test_the_end_of_run_summary_counts_them(run):
    text = "\n".join(summary_lines(run.run_dir))
    assert "flags:    1 spread, 1 unchanged" in text
    assert "instructions cut 1 at T5's limit, 1 at CLIP's limit" in text
    assert "notes:    2 row(s) with notes" in text


def test_the_review_server_shows_them_and_a_carried_image_keeps_its_flags(run, tmp_path):
    rows = {r["row_id"]: r for r in session(run).query({}, 0, 50)["rows"]}
    assert rows["p0-v0"]["notes"] == EXIF_NOTE and rows["p1-v0"]["truncated"] is True
    assert rows["p0-v3"]["flags"] == ["unchanged"] and rows["p0-v0"]["cost"] > 0
    assert session(run).meta()["marks"] == {"T5 cut": 1, "spread": 1, "unchanged": 1, "with notes": 2}
    night = synthetic(run.out_root, run_id="run-night-2", failed=(), cache_hits=tuple(range(12)))
    generate_reports(night.run_dir, progress=False)
    assert results(night.run_dir)["p0-v3"]["flags"] == ["unchanged"]  # from the run that made it
    assert session(night).query({"flag": "unchanged"}, 0, 50)["total"] == 1
