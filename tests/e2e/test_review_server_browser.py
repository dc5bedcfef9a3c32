"""The served review page in real headless Chromium, driven by selenium through Debian's
chromium-driver (tests/setup_browser.sh installs both): clicks record decisions that survive a
reload, a product is approved in bulk, the keys work, manifest markup never runs, a night's page
shows the decisions its carried images got on an earlier night."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from review_helpers import SCRIPT, decision_lines, session, synthetic

import jobs.review_targets  # noqa: F401  (registers JOB --date)
from pipeline.review.runs import resolve_target
from pipeline.review.server import start_review_server
from pipeline.review.service import ReviewSession

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SETUP = Path(__file__).resolve().parents[1] / "setup_browser.sh"  # with the shared helpers
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


def _installed() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return os.path.exists(CHROMIUM) and os.path.exists(DRIVER)


@pytest.fixture(scope="module")
def webdriver_module():
    if os.environ.get("KONTEXT_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("KONTEXT_SKIP_BROWSER_TESTS=1")
    if not _installed():
        result = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, timeout=900)
        if result.returncode != 0 or not _installed():
            pytest.fail(f"chromium, chromium-driver or selenium is missing and {SETUP} could not install "
                        f"them:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}\nRun it by hand (needs apt "
                        "and pip), or set KONTEXT_SKIP_BROWSER_TESTS=1")
    from selenium import webdriver

    return webdriver


@pytest.fixture
def browser(webdriver_module, tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver_module.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    driver = webdriver_module.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


@pytest.fixture
def served(tmp_path):
    run = synthetic(tmp_path / "out", instructions={3: SCRIPT})
    server = start_review_server(session(run, reviewer="rita"))
    yield server, run, tmp_path / "out"
    server.close()


def wait(driver, condition, what):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 30).until(lambda d: condition(d), message=what)


def decision_of(driver, row_id):
    """Read in one script call: the page re-renders its tiles after each decision."""
    return driver.execute_script(
        "var t = document.querySelector('article.tile[data-row-id=\"' + arguments[0] + '\"]');"
        "return t ? t.getAttribute('data-decision') : null;", row_id)


def tile_count(driver):
    return driver.execute_script("return document.querySelectorAll('article.tile').length")


def open_page(driver, url, tiles=12):
    driver.get(url)
    wait(driver, lambda d: tile_count(d) == tiles, f"{tiles} tiles")


def tile_texts(driver, row_id):
    """(status, badge) texts of one tile, read in one script call."""
    return tuple(driver.execute_script(
        "var t = document.querySelector('article.tile[data-row-id=\"' + arguments[0] + '\"]');"
        "return t ? [t.querySelector('.status').textContent, t.querySelector('.badge').textContent]"
        " : [null, null];", row_id))


def click(driver, row_id, act):
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'article.tile[data-row-id="{row_id}"] button[data-act="{act}"]').click()
    wait(driver, lambda d: decision_of(d, row_id) == act, f"{row_id} shows {act}")


def test_clicked_decisions_persist_across_a_reload(browser, served):
    from selenium.webdriver.common.by import By

    server, run, out = served
    open_page(browser, server.url)
    assert browser.title == "Review decisions: run run-synthetic"  # the instruction's script never ran
    text = browser.find_element(By.CSS_SELECTOR, 'article.tile[data-row-id="p0-v3"] p.instruction').text
    assert text == SCRIPT
    click(browser, "p0-v0", "approve")
    note = browser.find_element(By.CSS_SELECTOR, 'article.tile[data-row-id="p1-v0"] input.note')
    note.send_keys("background bleeds")
    click(browser, "p1-v0", "reject")
    assert not browser.find_elements(By.CSS_SELECTOR, 'article.tile[data-row-id="p0-v1"] button')  # failed
    browser.refresh()
    open_page(browser, server.url)
    assert (decision_of(browser, "p0-v0"), decision_of(browser, "p1-v0"), decision_of(browser, "p2-v0")) == (
        "approve", "reject", "none")
    badge = browser.find_element(By.CSS_SELECTOR, 'article.tile[data-row-id="p1-v0"] .badge').text
    assert badge == "reject by rita: background bleeds"
    lines = decision_lines(out)
    assert [(r["row_id"], r["decision"], r["reviewer"], r["note"]) for r in lines] == [
        ("p0-v0", "approve", "rita", ""), ("p1-v0", "reject", "rita", "background bleeds")]
    assert lines[0]["key"] == run.rows[0]["key"]


def test_bulk_approve_a_product_and_keyboard_shortcuts(browser, served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    server, run, out = served
    open_page(browser, server.url)
    Select(browser.find_element(By.ID, "filter-product")).select_by_value("P002")
    wait(browser, lambda d: tile_count(d) == 4, "P002's 4 tiles")
    browser.find_element(By.CSS_SELECTOR, 'button[data-bulk="approve"]').click()
    wait(browser, lambda d: all(decision_of(d, f"p2-v{v}") == "approve" for v in range(4)), "P002 approved")
    assert sorted(r["row_id"] for r in decision_lines(out)) == ["p2-v0", "p2-v1", "p2-v2", "p2-v3"]
    Select(browser.find_element(By.ID, "filter-product")).select_by_value("")
    wait(browser, lambda d: tile_count(d) == 12, "all tiles again")
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("j")  # first row
    body.send_keys("j")  # second row: p0-v1 failed, no decision possible
    body.send_keys("j")  # third: p0-v2
    body.send_keys("r")
    wait(browser, lambda d: decision_of(d, "p0-v2") == "reject", "r rejected the focused row")
    browser.find_element(By.TAG_NAME, "body").send_keys("k")
    browser.find_element(By.TAG_NAME, "body").send_keys("k")
    browser.find_element(By.TAG_NAME, "body").send_keys("a")
    wait(browser, lambda d: decision_of(d, "p0-v0") == "approve", "a approved the focused row")
    browser.find_element(By.TAG_NAME, "body").send_keys("z")
    wait(browser, lambda d: d.find_element(By.ID, "lightbox").is_displayed(), "zoom opens")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait(browser, lambda d: not d.find_element(By.ID, "lightbox").is_displayed(), "Esc closes")
    assert [(r["row_id"], r["decision"]) for r in decision_lines(out)][-2:] == [
        ("p0-v2", "reject"), ("p0-v0", "approve")]
    images = browser.find_elements(By.CSS_SELECTOR, 'article.tile[data-row-id="p0-v0"] img')
    assert len(images) == 2 and all(browser.execute_script("return arguments[0].naturalWidth", i) > 0
                                     for i in images)  # before and after both loaded


NIGHTS_SPEC = """name: shop
manifest: manifest.parquet
model: kontext-tiny
output: out
"""


@pytest.fixture
def second_night(tmp_path):
    """Job shop's night 1 (p0-v0 approved, p0-v1 rejected by rita), then night 2 in the same OUT
    where both are cache hits and p0-v2 is new (a changed instruction: a new key), served for
    bob the way `review shop --date 2026-11-02` serves it."""
    spec = tmp_path / "shop.yaml"
    spec.write_text(NIGHTS_SPEC)
    out = tmp_path / "out"
    first = synthetic(out, run_id="shop-2026-11-01", products=1, variants=3, failed=(), cache_hits=())
    session(first, reviewer="rita").decide("approve", row_ids=["p0-v0"])
    session(first, reviewer="rita").decide("reject", note="too dark", row_ids=["p0-v1"])
    second = synthetic(out, run_id="shop-2026-11-02", products=1, variants=3, failed=(),
                       cache_hits=(0, 1), instructions={2: "put the product on a marble table"})
    assert second.rows[2]["key"] != first.rows[2]["key"]  # the new row is new to the cache
    server = start_review_server(ReviewSession(resolve_target(str(spec), "2026-11-02"), "bob"))
    yield server, out
    server.close()


def test_the_night_view_shows_carried_decisions(browser, second_night):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    server, out = second_night
    open_page(browser, server.url, tiles=3)
    assert browser.title == "Review decisions: run shop-2026-11-02"
    assert [decision_of(browser, f"p0-v{v}") for v in range(3)] == ["approve", "reject", "none"]
    assert tile_texts(browser, "p0-v0") == ("cache-hit (carried)", "approve by rita")
    assert tile_texts(browser, "p0-v1") == ("cache-hit (carried)", "reject by rita: too dark")
    assert tile_texts(browser, "p0-v2") == ("done", "waiting for review")
    counts = browser.find_element(By.ID, "counts").text
    assert counts == "1 approve · 1 reject · 1 waiting · reviewer bob"
    Select(browser.find_element(By.ID, "filter-decision")).select_by_value("approve")
    wait(browser, lambda d: tile_count(d) == 1, "only the approved tile")
    assert decision_of(browser, "p0-v0") == "approve"
    assert browser.find_element(By.ID, "showing").text == "showing 1-1 of 1 rows"
    # only night 1's two decisions are in the log: the page showed them, it wrote nothing
    assert [(r["row_id"], r["decision"], r["run_id"]) for r in decision_lines(out)] == [
        ("p0-v0", "approve", "shop-2026-11-01"), ("p0-v1", "reject", "shop-2026-11-01")]
