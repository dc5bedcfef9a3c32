"""The review pages' script and style sheets are real files (package data), not Python strings.

The static page writes pipeline/reports/static/review.{js,css} next to review.html and the review
server serves pipeline/review/static/app.{js,css}, byte for byte as shipped. The digests are those
of the strings the modules held before the files moved out (issue #20): a tidy changes no byte.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from review_helpers import call, session, synthetic

from pipeline.reports import generate_reports
from pipeline.review.server import start_review_server

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = {
    "pipeline/reports/static/review.js": "903496b93bc16a2865c63be510d72533ec955f2e47a5a8386712b598403035a4",
    "pipeline/reports/static/review.css": "a25441939d344807a77c89cb3af3329f348a33fc0bde8ea38b4c6dcb3d89c82c",
    "pipeline/review/static/app.js": "5460aa3c0654ea640d50952d1ca2d69fa2d8920f139f072af07b41458e692901",
    "pipeline/review/static/app.css": "e13228457c6b0157c473b93e73a319214aedd37e6314140019e124f43d8e1595",
}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("path", sorted(GOLDEN))
def test_static_file_holds_the_former_strings_bytes(path):
    assert _sha((ROOT / path).read_bytes()) == GOLDEN[path]


@pytest.mark.parametrize("module", ["pipeline/reports/review_assets.py", "pipeline/review/assets.py"])
def test_no_script_or_style_sheet_left_in_python_source(module):
    text = (ROOT / module).read_text(encoding="utf-8")
    assert "(function () {" not in text and "body{font:" not in text


def test_static_page_writes_the_shipped_files_byte_for_byte(tmp_path):
    run = synthetic(tmp_path / "out")
    generate_reports(run.run_dir, progress=False)
    for name in ("review.js", "review.css"):
        written = (run.run_dir / name).read_bytes()
        assert written == (ROOT / "pipeline/reports/static" / name).read_bytes(), name


def test_server_serves_the_shipped_files_byte_for_byte(tmp_path):
    run = synthetic(tmp_path / "out")
    server = start_review_server(session(run))
    try:
        for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
            status, body, headers = call(server.port, f"/{name}", token=server.token)
            assert status == 200 and headers["Content-Type"].startswith(kind), name
            assert body == (ROOT / "pipeline/review/static" / name).read_bytes(), name
    finally:
        server.close()
