"""The review page in headless Chromium (Debian's chromium; tests/setup_browser.sh installs it).

The page is loaded from disk (file://), its scripts run, and the DOM a reviewer would see is
dumped and checked: tile count, failed placeholders, flags, the filters (applied through the
URL hash #filter=..., the same path a click takes), markup in instructions shown as text and
never run. A screenshot is saved and checked to be a real rendering.
"""

import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic_runs import make_synthetic_run

from pipeline.reports import generate_reports

CHROMIUM = "/usr/bin/chromium"
SETUP = Path(__file__).resolve().parents[1] / "setup_browser.sh"  # with the shared helpers
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=\"document.title='pwned'\">"
TITLE = "Review: run run-synthetic"


@pytest.fixture(scope="module")
def chromium():
    if os.environ.get("KONTEXT_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("KONTEXT_SKIP_BROWSER_TESTS=1")
    if not os.path.exists(CHROMIUM):
        result = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not os.path.exists(CHROMIUM):
            pytest.fail(f"chromium is missing and {SETUP} could not install it:\n{result.stdout[-2000:]}"
                        f"\n{result.stderr[-2000:]}\nRun it by hand (needs apt), or set KONTEXT_SKIP_BROWSER_TESTS=1")
    return CHROMIUM


def run_chromium(binary, tmp_path, url, *extra):
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=2000", *extra, url]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class Dom(HTMLParser):
    def __init__(self, text):
        super().__init__()
        self.elements, self.title, self._in_title, self.text = [], "", False, []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_title = tag == "title"

    def handle_endtag(self, tag):
        self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        self.text.append(data)

    def tiles(self):
        return [a for tag, a in self.elements if tag == "article" and "tile" in a.get("class", "")]

    def visible_tiles(self):
        return [int(a["data-tile"]) for a in self.tiles() if "hidden" not in a]

    def body(self):
        return next(a for tag, a in self.elements if tag == "body")


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "out"
    run = make_synthetic_run(out, products=3, variants=4, failed=(1,), cache_hits=(2,), retried=(3,),
                             unchanged=(5,), spread=(6,), not_run=(11,), instructions={7: SCRIPT, 8: IMG})
    return generate_reports(run.run_dir, progress=False).review_page


def dump(chromium, tmp_path, page, fragment=""):
    return Dom(run_chromium(chromium, tmp_path, page.as_uri() + fragment, "--dump-dom"))


def test_all_rows_visible_and_markup_shown_as_text_never_run(chromium, tmp_path, page):
    dom = dump(chromium, tmp_path, page, "#filter=all")
    assert dom.body().get("data-filter") == "all"  # our script ran...
    assert dom.title == TITLE  # ...but the injected onerror handler did not
    # rows generated or failed this run: 12 less the cache hit (row 2) and the row not run (11)
    assert len(dom.tiles()) == 10 and dom.visible_tiles() == list(range(10))
    assert "showing 10 of 10 rows" in dom.text
    assert SCRIPT in dom.text and IMG in dom.text  # shown to the reviewer as text
    assert not [a for tag, a in dom.elements if tag == "img" and a.get("src") == "x"]
    assert not [a for tag, a in dom.elements if tag == "script" and a.get("src") not in ("review.js", None)]


def test_failed_filter_shows_only_the_failed_placeholder(chromium, tmp_path, page):
    dom = dump(chromium, tmp_path, page, "#filter=failed")
    assert dom.visible_tiles() == [1]
    assert "showing 1 of 10 rows" in dom.text
    failed_tile = next(a for a in dom.tiles() if a["data-tile"] == "1")
    assert failed_tile["data-status"] == "failed"
    placeholders = [a for tag, a in dom.elements if tag == "div" and a.get("aria-label") == "FAILED"]
    assert len(placeholders) == 1
    pressed = [a["data-filter"] for tag, a in dom.elements if tag == "button" and a.get("aria-pressed") == "true"]
    assert pressed == ["failed"]


def test_flagged_filter_shows_unchanged_and_spread_rows(chromium, tmp_path, page):
    dom = dump(chromium, tmp_path, page, "#filter=flagged")
    assert dom.visible_tiles() == [4, 5]  # rows 5 and 6 (the cache hit, row 2, has no tile)
    flags = {a["data-tile"]: a["data-flags"] for a in dom.tiles() if "hidden" not in a}
    assert flags == {"4": "unchanged", "5": "spread"}


def test_policy_blocks_an_inline_script_even_if_one_got_in(chromium, tmp_path, page):
    tampered = page.with_name("tampered.html")
    text = page.read_text(encoding="utf-8")
    tampered.write_text(text.replace("<main>", "<main><script>document.title='inline ran'</script>", 1))
    dom = dump(chromium, tmp_path, tampered)
    assert dom.title == TITLE and dom.body().get("data-filter") == "all"


def test_screenshot_is_a_real_rendering(chromium, tmp_path, page):
    shot = tmp_path / "review.png"
    run_chromium(chromium, tmp_path, page.as_uri(), f"--screenshot={shot}", "--window-size=1280,2000")
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    pixels = np.asarray(image).reshape(-1, 3)
    colours = np.unique(pixels, axis=0)
    assert len(colours) > 200  # thumbnails, heat maps and text, not a blank page
    # The failed tile's red and the done tiles' green borders are on screen.
    assert ((pixels == (200, 40, 40)).all(axis=1)).any() and ((pixels == (46, 160, 67)).all(axis=1)).any()
    artifacts = os.environ.get("KONTEXT_TEST_ARTIFACTS")
    if artifacts:  # CI can keep the screenshot for a person to look at
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / "review_page.png")
