"""Smoke tests of benchmarks/bench_publish.py and bench_review_page.py on a few rows: each prints
its figures in the documented lines and leaves no scratch folder behind (benchmarks/scratch_run.py
builds the synthetic run and removes it). Timings are not checked (a shared CI machine)."""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load_bench(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch) -> Path:
    """tempfile's directory for the benchmark's scratch folder, to see that it is removed."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_bench_publish_publishes_every_row_then_nothing_new(scratch: Path, capsys) -> None:
    assert load_bench("bench_publish").main(["--rows", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"synthetic run: 30 approved images built in [\d.]+ s \(not timed below\)", lines[0])
    assert re.fullmatch(r"first publish: 30 images in [\d.]+ s \([\d,]+ images/s\); target < 60 s", lines[1])
    assert re.fullmatch(r"publish again: 30 unchanged, 0 written in [\d.]+ s", lines[2])
    assert len(lines) == 3 and list(scratch.iterdir()) == []


def test_bench_review_page_times_the_first_rows_in_chromium(scratch: Path, capsys) -> None:
    if os.environ.get("KONTEXT_SKIP_BROWSER_TESTS") == "1":
        pytest.skip("KONTEXT_SKIP_BROWSER_TESTS=1")
    pytest.importorskip("selenium")
    bench = load_bench("bench_review_page")
    if not (os.path.exists(bench.CHROMIUM) and os.path.exists(bench.DRIVER)):
        pytest.skip(f"needs {bench.CHROMIUM} and {bench.DRIVER} (tests/setup_browser.sh installs them)")
    assert bench.main(["--rows", "30", "--loads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(r"synthetic run of 30 rows built in [\d.]+ s \(not timed below\)", lines[0])
    assert lines[1].startswith("review session start (results.parquet, decisions log): ")
    assert re.fullmatch(r"/api/meta: [\d.]+ s; /api/rows \(first 50\): [\d.]+ s", lines[2])
    assert re.fullmatch(r"time to first rows in Chromium, first load: [\d.]+ s", lines[3])
    assert re.fullmatch(r"time to first rows, reloads: min [\d.]+ s, max [\d.]+ s \(1 loads\); target < 2 s",
                        lines[4])
    assert len(lines) == 5 and list(scratch.iterdir()) == []
