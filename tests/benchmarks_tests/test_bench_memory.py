"""benchmarks/bench_memory.py: refuses on a CPU-only machine (exit 2, says why); --smoke runs
every plan on tiny-random."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_memory.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_refuses_without_a_gpu(capsys):
    assert _bench().main([]) == 2
    assert "no CUDA GPU here" in capsys.readouterr().err


def test_smoke_runs_every_plan(capsys):
    assert _bench().main(["--smoke"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["resident", "model-offload", "fp8", "fp8-model-offload", "group-offload", "fp8-group-offload"]
    stored = {line.split()[0]: int(line.split()[2]) for line in lines}
    assert stored["fp8"] < stored["resident"]
