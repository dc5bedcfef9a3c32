"""benchmarks/bench_memory.py: refuses CUDA on a CPU-only machine (exit 2, says why); ``--shapes tiny``
runs the GPU path's code on the CPU: random checkpoint written to disk, every plan (bf16 folder and
GGUF copies) loaded with text=False, warm-up + timed edit, JSON with one object per plan."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"
PLANS = ["resident", "model-offload", "fp8", "fp8-model-offload", "partial-offload", "fp8-partial-offload",
         "group-offload", "fp8-group-offload",
         "Q8_0:resident", "Q8_0:model-offload", "Q8_0:partial-offload", "Q8_0:group-offload",
         "Q4_K:resident", "Q4_K:model-offload", "Q4_K:partial-offload", "Q4_K:group-offload"]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_without_a_gpu(capsys):
    assert _bench().main([]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU here" in err and "--shapes tiny --device cpu" in err


def test_unknown_plan_is_a_usage_error(capsys):
    assert _bench().main(["--shapes", "tiny", "--device", "cpu", "--plans", "resident,Q2_K:resident"]) == 2
    err = capsys.readouterr().err
    assert "unknown plan(s) Q2_K:resident" in err and "Q4_K:model-offload" in err


def test_tiny_shapes_measure_every_plan(tmp_path, capsys):
    out = tmp_path / "out.json"
    work = tmp_path / "work"
    work.mkdir()
    code = _bench().main(["--shapes", "tiny", "--device", "cpu", "--steps", "2", "--size", "64",
                          "--json", str(out), "--workdir", str(work)])
    assert code == 0, capsys.readouterr()
    doc = json.loads(out.read_text())
    results = {r["name"]: r for r in doc["plans"]}
    assert list(results) == PLANS
    for r in results.values():
        assert "error" not in r, r
        for key in ("s_per_image", "peak_gib", "load_peak_gib", "edit_peak_gib", "predicted_gib"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["name"], key)
        assert r["exact"] is (r["storage"] == "bf16")
    bf16 = results["resident"]["stored_bytes"]
    for name in ("fp8", "fp8-model-offload", "fp8-partial-offload", "fp8-group-offload"):
        assert results[name]["storage"] == "fp8" and results[name]["stored_bytes"] < bf16
    assert results["Q8_0:resident"]["stored_bytes"] < bf16
    # offload moves bytes, not values: the same pixels as the resident plan
    for name in ("model-offload", "partial-offload", "group-offload"):
        assert results[name]["max_diff_vs_resident"] == 0
    assert [t["verdict"] for t in doc["targets"]] == ["n/a (only judged at the published shapes on CUDA)"] * 3
    assert list(work.iterdir()) == []  # the random checkpoints are removed afterwards
    table = capsys.readouterr().out
    assert all(f" {name} " in table for name in PLANS)


def test_a_folder_that_cannot_be_written_fails_its_plans_alone(tmp_path, monkeypatch, capsys):
    bench = _bench()
    calls = []

    def full_disk(*args, **kwargs):
        calls.append(args)
        raise bench.random_checkpoint.DiskFullError("flux1-kontext-dev-Q8_0.gguf needs 11.8 GiB but /tmp has 2.0 GiB free")

    monkeypatch.setattr(bench.random_checkpoint, "write_gguf_folder", full_disk)
    out = tmp_path / "out.json"
    code = bench.main(["--shapes", "tiny", "--device", "cpu", "--steps", "1", "--warmup-steps", "1", "--size", "64",
                       "--plans", "resident,Q8_0:resident,Q8_0:model-offload", "--json", str(out)])
    assert code == 1
    results = {r["name"]: r for r in json.loads(out.read_text())["plans"]}
    assert "error" not in results["resident"] and math.isfinite(results["resident"]["peak_gib"])
    for name in ("Q8_0:resident", "Q8_0:model-offload"):
        assert results[name]["error"].startswith("DiskFullError: flux1-kontext-dev-Q8_0.gguf needs 11.8 GiB")
    assert len(calls) == 1  # tried once, not once per plan
    assert "error: DiskFullError" in capsys.readouterr().out


def test_partial_plans_are_sized_for_their_targets_card_at_the_published_shapes():
    bench = _bench()
    assert bench.memory_of("partial-offload", "published") == "24GB"
    assert bench.memory_of("fp8-partial-offload", "published") == bench.memory_of("Q8_0:partial-offload",
                                                                                 "published") == "15.5GB"
    assert bench.memory_of("Q4_K:partial-offload", "published") == "10GB"
    assert bench.memory_of("resident", "published") == bench.memory_of("partial-offload", "tiny") == "auto"
    # each target's card: 90% of it is the target
    limits = {t[0]: t[2] for t in bench.TARGETS}
    assert 0.9 * 24 <= limits["bf16, text phase apart"] and 0.9 * 15.5 <= limits["fp8 or Q8_0"]
    assert 0.9 * 10 <= limits["Q4_K with offload"]
