"""How fast the served review page of a 20,000-row run becomes usable in Chromium.

    .venv/bin/python benchmarks/bench_review_page.py [--rows 20000] [--loads 3]

Builds a synthetic run folder cheaply (synthetic_runs.make_large_run: 64 px images, most rows cache
hits hard-linked to a template output; not timed), opens `kontext-batch review`'s server on it
(ReviewSession + ReviewServer, as the command does) and drives headless Chromium (selenium +
Debian's chromium-driver, tests/setup_browser.sh installs them) to the printed URL. Prints:

- the session's start (results.parquet read, decisions folded) and one /api/meta, /api/rows call;
- time to first rows: from navigation until the first page of tiles is in the DOM (the page is
  usable: rows visible, keys and buttons live), for the first load and for reloads.

The issue's target: under 2 s for 20,000 rows. This prints figures; it does not assert.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # the helper modules beside this script

from scratch_run import scratch_run  # noqa: E402

from pipeline.review.runs import run_target  # noqa: E402
from pipeline.review.server import ReviewServer  # noqa: E402
from pipeline.review.service import ReviewSession  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1400,1000")


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)


def first_rows_seconds(driver, url: str) -> float:
    """Seconds from navigation until the first tiles are in the DOM."""
    from selenium.webdriver.support.ui import WebDriverWait

    start = time.perf_counter()
    driver.get(url)
    WebDriverWait(driver, 60, poll_frequency=0.01).until(
        lambda d: d.execute_script("return document.querySelectorAll('article.tile').length") > 0)
    return time.perf_counter() - start


def timed_get(url: str) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as resp:
        resp.read()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--loads", type=int, default=3, help="page loads after the first")
    args = parser.parse_args(argv)
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        print(f"needs {CHROMIUM} and {DRIVER}: run tests/setup_browser.sh", file=sys.stderr)
        return 2
    start = time.perf_counter()
    with scratch_run("bench-review-", args.rows) as (work, run):
        print(f"synthetic run of {args.rows:,} rows built in {time.perf_counter() - start:.1f} s (not timed below)")
        start = time.perf_counter()
        session = ReviewSession(run_target(run.run_dir), "bench")
        print(f"review session start (results.parquet, decisions log): {time.perf_counter() - start:.3f} s")
        server = ReviewServer(session).start()
        base = f"http://127.0.0.1:{server.port}"
        token = server.token
        try:
            print(f"/api/meta: {timed_get(f'{base}/api/meta?token={token}'):.3f} s; "
                  f"/api/rows (first 50): {timed_get(f'{base}/api/rows?limit=50&token={token}'):.3f} s")
            driver = browser(work / "profile")
            try:
                first = first_rows_seconds(driver, server.url)
                again = [first_rows_seconds(driver, server.url) for _ in range(args.loads)]
            finally:
                driver.quit()
        finally:
            server.close()
        print(f"time to first rows in Chromium, first load: {first:.3f} s")
        if again:
            print(f"time to first rows, reloads: min {min(again):.3f} s, max {max(again):.3f} s "
                  f"({len(again)} loads); target < 2 s")
    return 0

if __name__ == "__main__":
    sys.exit(main())
