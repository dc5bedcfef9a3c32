"""Smoke test of benchmarks/bench_cpu_peer.py: one repeat, one step, small batches. It must print
every case with finite agreement figures (ours and diffusers computing the same edit); timings are
not checked (a shared CI machine)."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_cpu_peer", REPO / "benchmarks" / "bench_cpu_peer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_prints_ratios_and_finite_agreement(tmp_path, capsys):
    out = tmp_path / "peer.json"
    bench = load_bench()
    assert bench.main(["--repeats", "1", "--warmup", "0", "--steps", "1", "--batches", "1", "2",
                       "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    rows = [line.split() for line in text.splitlines()
            if re.match(r"^(transformer|edit/distinct|edit/catalog)\s+\d+\s", line)]
    assert [(r[0], r[1]) for r in rows] == [(c, b) for c in ("transformer", "edit/distinct", "edit/catalog")
                                            for b in ("1", "2")]
    for r in rows:
        assert all(math.isfinite(float(x)) and float(x) > 0 for x in r[2:8])  # ms and both ratios
    rel = [float(m) for m in re.findall(r"rel diff (\S+)", text)]
    equal = [float(m) for m in re.findall(r"pixels equal ([\d.]+)%", text)]
    assert len(rel) == 4 and len(equal) == 8  # each case's progress line and its table row
    assert all(math.isfinite(x) and x <= 1e-5 for x in rel)
    assert all(x >= 99.0 for x in equal)
    figures = json.loads(out.read_text())["results"]
    assert len(figures) == 6
    assert all(math.isfinite(f["speedup_median"]) and math.isfinite(f["speedup_min"]) for f in figures)
    assert all(f["max_pixel_diff"] <= 2 for f in figures if f["case"].startswith("edit/"))
