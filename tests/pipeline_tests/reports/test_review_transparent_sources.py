"""Sources with transparency are shown, compared and heat-mapped as the model saw them:
flattened onto white (pipeline.image_io), not on the black hidden under transparent pixels."""

from __future__ import annotations

import io
import json
import re

import numpy as np
from PIL import Image
from review_helpers import session, synthetic

from pipeline.provenance import encode_image_with_provenance, sidecar_json
from pipeline.reports import generate_reports


def transparent_source(run, index: int = 0) -> Image.Image:
    """Make row `index`'s source an RGBA PNG whose background is transparent black, and its
    output that source flattened on white (an edit that changed nothing the model saw)."""
    row = run.rows[index]
    src_path = run.out_root / "sources" / row["image"]
    rgb = np.asarray(Image.open(src_path).convert("RGB")).copy()
    corner = rgb[0, 0].astype(int)
    background = np.abs(rgb.astype(int) - corner).sum(axis=2) < 90
    alpha = np.where(background, 0, 255).astype(np.uint8)
    rgb[background] = 0  # what a plain convert("RGB") shows: black
    rgba = Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    rgba.save(src_path)
    flat = rgb.copy()
    flat[background] = 255
    output = Image.fromarray(flat, "RGB")
    data = encode_image_with_provenance(output, "png", run.params[row["row_id"]])
    out_path = run.out_root / "store" / "objects" / row["key"][:2] / f"{row['key']}.png"
    out_path.write_bytes(data)
    out_path.with_suffix(".json").write_bytes(sidecar_json(run.params[row["row_id"]], image_bytes=data))
    return output


def page_rows(run_dir) -> dict[str, dict]:
    html = (run_dir / "review.html").read_text()
    data = json.loads(re.search(r'id="review-data">(.*?)</script>', html, re.S).group(1))
    return {r["row_id"]: r for r in data["rows"]}


def test_a_transparent_source_is_compared_and_shown_flattened_on_white(tmp_path):
    run = synthetic(tmp_path / "out", failed=(), cache_hits=())
    transparent_source(run)
    generate_reports(run.run_dir, progress=False)
    row = page_rows(run.run_dir)["p0-v0"]
    assert "unchanged" in row["flags"]  # the output equals the source the model got
    assert row["mean_diff"] < 0.01
    thumbs = list((run.run_dir / "review" / "sources").glob("product-0*.jpg"))
    assert len(thumbs) == 1
    corner = Image.open(thumbs[0]).convert("RGB").getpixel((0, 0))
    assert min(corner) > 240, corner  # white, not black


def test_the_review_server_shows_a_transparent_source_on_white(tmp_path):
    run = synthetic(tmp_path / "out", failed=(), cache_hits=())
    transparent_source(run)
    (run.run_dir / "config.json").write_text(json.dumps(
        {"run_id": run.run_dir.name, "manifest": str(run.out_root / "sources" / "manifest.parquet")}))
    data, content_type = session(run).source_image(0)
    img = Image.open(io.BytesIO(data))
    assert content_type == "image/png" and img.mode == "RGB"
    assert min(img.getpixel((0, 0))) > 240 and min(img.getpixel((img.width - 1, 0))) > 240
