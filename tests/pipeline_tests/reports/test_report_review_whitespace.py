"""Review page: an instruction that differs only in whitespace is not a provenance mismatch.

A real run with the tiny-random model: the pipeline embeds the normalised instruction (the cache
key's form) in each output, results.parquet keeps the manifest's raw text.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_helpers import make_manifest, run_once

from pipeline.provenance import encode_image_with_provenance, read_provenance
from pipeline.reports import generate_reports

PADDED = "  make the   background white "


@pytest.fixture(scope="module")
def run(tmp_path_factory):

    folder = tmp_path_factory.mktemp("whitespace")
    manifest = make_manifest(folder / "m", products=1, variants=3, instruction=[PADDED] * 3)
    summary = run_once(manifest, folder / "out", batch_size=3)
    assert summary.exit_code == 0 and summary.counts["done"] == 3
    return summary


def review_flags(page: Path) -> dict[str, list[str]]:
    body = re.search(r'<script type="application/json" id="review-data">(.*?)</script>',
                     page.read_text(encoding="utf-8"), re.S).group(1)
    return {r["row_id"]: r["flags"] for r in json.loads(body)["rows"]}


def test_whitespace_only_difference_is_not_flagged(run):
    rows = pq.read_table(run.results).to_pylist()
    assert {r["instruction"] for r in rows} == {PADDED}  # the raw manifest text
    embedded = read_provenance(Path(rows[0]["output_uri"]).read_bytes())
    assert embedded["instruction"] == "make the background white"  # normalised by the pipeline
    flags = review_flags(generate_reports(run.run_dir, progress=False).review_page)
    assert len(flags) == 3
    assert not [row for row, f in flags.items() if "provenance-mismatch" in f]


def test_a_genuinely_different_embedded_instruction_is_still_flagged(run):
    rows = pq.read_table(run.results).to_pylist()
    tampered = Path(rows[0]["output_uri"])
    params = read_provenance(tampered.read_bytes())
    image = Image.open(tampered).convert("RGB")
    tampered.write_bytes(encode_image_with_provenance(image, "png", {**params, "instruction": "something else"}))
    flags = review_flags(generate_reports(run.run_dir, progress=False).review_page)
    assert "provenance-mismatch" in flags[rows[0]["row_id"]]
    assert not [row for row, f in flags.items() if "provenance-mismatch" in f and row != rows[0]["row_id"]]
