"""Chained edits (#21) in the review: a chain is a strip on the contact sheet (source ->
step 1 -> step 2 ...), each step is compared with its parent's output (not flagged
no-source), and each tile names its place in the chain."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
from hardening_helpers import run_cli, run_dirs
from PIL import Image
from pipeline_helpers import REPO, write_images

from pipeline.reports.sheets import SheetLayout


def _manifest(folder: Path) -> Path:
    """One product: two 3-step chains (seeds 1 and 2) and one plain variant."""
    write_images(folder / "images", 1)
    rows = [{"row_id": "plain", "image": "images/product_0.png", "instruction": "on red",
             "seed": 7, "product_id": "p0", "variant": "red"}]
    for chain in (1, 2):
        for k, text in enumerate(("cut out", "relight", "shadow"), start=1):
            image = "images/product_0.png" if k == 1 else f"row:c{chain}-s{k - 1}"
            rows.append({"row_id": f"c{chain}-s{k}", "image": image, "instruction": text,
                         "seed": chain, "product_id": "p0", "variant": f"c{chain}-s{k}"})
    path = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def test_review_shows_chains_as_strips_against_their_parents(cluster, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(_manifest(tmp_path), out, cluster.address)
    assert proc.returncode == 0, proc.stderr
    run_dir = run_dirs(out)[0]
    sheets = sorted((run_dir / "sheets").glob("*.png"))
    assert len(sheets) == 1
    layout = SheetLayout()
    cell_w = layout.cell + 8
    # strips: [source, plain], [source, c1-s1, c1-s2, c1-s3], [source, c2-...]: 4 columns,
    # 3 grid rows (a plain grid would be 6 columns wide, 2 rows)
    width, height = Image.open(sheets[0]).size
    assert width == 8 + 4 * cell_w
    page = (run_dir / "review.html").read_text()
    data = json.loads(re.search(r'id="review-data">(.*?)</script>', page, re.S).group(1))
    rows = {r["row_id"]: r for r in data["rows"]}
    assert rows["c1-s2"]["chain"] == "step 2 of 3: c1-s1 -> [c1-s2] -> c1-s3"
    assert "chain" not in rows["plain"]
    for rid in ("c1-s2", "c1-s3", "c2-s3"):
        assert "no-source" not in rows[rid]["flags"], rows[rid]
        assert rows[rid]["heat"], rid  # compared with the parent's output
    assert "source: output of row c1-s1" in page
    # report --verify recomputes every key, a chained one from its parent's recorded key
    verify = subprocess.run([sys.executable, "-m", "pipeline.cli", "report", str(run_dir),
                             "--verify"], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "7 key(s) recomputed from their sources" in verify.stdout
    assert "not recomputed" not in verify.stdout
