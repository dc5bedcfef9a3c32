"""Review page as written to disk (no browser): tiles, flags, escaping, CSP, relative images."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from PIL import Image
from synthetic_runs import make_synthetic_run, variant_image

from pipeline.provenance import encode_image_with_provenance, read_provenance
from pipeline.reports import generate_reports

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"


class Elements(HTMLParser):
    def __init__(self):
        super().__init__()
        self.elements = []  # (tag, attrs dict)
        self.script_bodies = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.script_bodies.append(data)


def parse(page: Path) -> Elements:
    parser = Elements()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("review") / "out"
    run = make_synthetic_run(out, products=3, variants=4, failed=(1,), cache_hits=(2,), retried=(3,),
                             unchanged=(5,), spread=(6,), not_run=(11,), instructions={7: SCRIPT, 8: IMG})
    outputs = generate_reports(run.run_dir, progress=False)
    return run, outputs


def tiles(parsed):
    return [a for tag, a in parsed.elements if tag == "article" and "tile" in a.get("class", "")]


def test_one_tile_per_row_to_review_with_status_and_flags(built):
    # Rows generated or failed in this run get a tile; the cache hit (row 2) and the row not run
    # (row 11) are only counted (test_reports_scale.py checks those counts).
    run, outputs = built
    found = tiles(parse(outputs.review_page))
    assert len(found) == 10
    by_status = {}
    for a in found:
        by_status[a["data-status"]] = by_status.get(a["data-status"], 0) + 1
    assert by_status == {"done": 9, "failed": 1}
    row_ids = [r["row_id"] for r in json.loads(parse(outputs.review_page).script_bodies[0])["rows"]]
    flags = {row_ids[int(a["data-tile"])]: a["data-flags"].split() for a in found}
    assert flags["p0-v1"] == ["failed"]
    assert flags["p1-v1"] == ["unchanged"] and flags["p1-v2"] == ["spread"]
    assert all(not f for row, f in flags.items() if row not in ("p0-v1", "p1-v1", "p1-v2"))


def test_markup_in_instructions_is_escaped_text_never_markup(built):
    _, outputs = built
    text = outputs.review_page.read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;img src=x onerror=&quot;document.title=&#x27;pwned&#x27;&quot;&gt;" in text
    assert SCRIPT not in text and "<img src=x" not in text
    parsed = parse(outputs.review_page)
    assert not [a for _, a in parsed.elements if any(name.startswith("on") for name in a)]
    scripts = [a for tag, a in parsed.elements if tag == "script"]
    assert scripts == [{"src": "review.js", "defer": None}, {"type": "application/json", "id": "review-data"}]
    assert not [a for tag, a in parsed.elements if tag == "img" and a.get("src") == "x"]
    (body,) = parsed.script_bodies
    assert "<" not in body and ">" not in body and "&" not in body
    rows = {r["row_id"]: r for r in json.loads(body)["rows"]}
    assert rows["p1-v3"]["instruction"] == SCRIPT and rows["p2-v0"]["instruction"] == IMG


def test_content_security_policy_forbids_inline_scripts(built):
    _, outputs = built
    metas = [a for tag, a in parse(outputs.review_page).elements if tag == "meta" and "http-equiv" in a]
    (csp,) = [m["content"] for m in metas if m["http-equiv"] == "Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert (outputs.review_page.parent / "review.js").read_text().startswith("// Review page filter")


def test_every_image_and_link_resolves_to_a_file_relative_to_the_page(built):
    _, outputs = built
    run_dir = outputs.review_page.parent
    refs = [a.get("src") or a.get("href") for tag, a in parse(outputs.review_page).elements
            if tag in ("img", "a", "link", "script") and (a.get("src") or a.get("href"))]
    assert len(refs) > 30
    for ref in refs:
        assert not re.match(r"^[a-z]+:", ref) and not ref.startswith("/"), ref  # relative only
        assert (run_dir / unquote(ref)).is_file(), ref


def test_provenance_mismatch_and_missing_output_are_flagged(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=3)
    tampered = run.rows[0]["output_uri"]
    params = read_provenance(open(tampered, "rb").read())
    img = Image.open(tampered).convert("RGB")
    with open(tampered, "wb") as handle:
        handle.write(encode_image_with_provenance(img, "png", {**params, "instruction": "something else"}))
    Path(run.rows[1]["output_uri"]).unlink()
    outputs = generate_reports(run.run_dir, progress=False)
    flags = {int(a["data-tile"]): a["data-flags"].split() for a in tiles(parse(outputs.review_page))}
    assert "provenance-mismatch" in flags[0]
    assert flags[1] == ["missing-output"]
    assert flags[2] == []
    assert variant_image  # the synthetic edits themselves raise no flag (row 2)


def test_review_images_of_half_size_outputs_are_shown_at_the_sources_size(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=2, image_size=128, output_size=64)
    outputs = generate_reports(run.run_dir, progress=False)
    review = run.run_dir / "review"
    for sub in ("thumbs", "sources", "heat"):  # output, source and heat map: one display size
        files = sorted((review / sub).iterdir())
        assert files and {Image.open(f).size for f in files} == {(256, 256)}, sub
    output = Image.open(run.rows[0]["output_uri"]).convert("RGB")
    thumb = np.asarray(Image.open(sorted((review / "thumbs").iterdir())[0]).convert("RGB")).astype(int)
    blocks = np.asarray(output).repeat(4, axis=0).repeat(4, axis=1).astype(int)
    assert np.abs(thumb - blocks).mean() < 3  # NEAREST blocks of the real pixels (JPEG-encoded)
    srcs = [a["src"] for tag, a in parse(outputs.review_page).elements if tag == "img"]
    assert any(s.startswith("review/thumbs/") for s in srcs) and any(s.startswith("review/sources/") for s in srcs)
