"""--fp8 through the pipeline: opt-in, keyed apart from exact outputs, emulated on the CPU."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_helpers import (
    TEST_MODEL,
    make_manifest,
    ray_cluster_fixture,
    read_records,
    run_config,
)

from pipeline import cli
from pipeline.actors import EditorActor
from pipeline.runner import run_batch

ray_cluster = ray_cluster_fixture(autouse=True)
_config = partial(run_config, steps=3)


def _results(summary) -> list[dict]:
    return pq.read_table(summary.results).to_pylist()


def test_fp8_is_opt_in_keyed_apart_and_exact_runs_are_unchanged(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    out = tmp_path / "out"
    exact = run_batch(_config(manifest, out))
    fp8 = run_batch(_config(manifest, out, fp8=True))
    assert exact.exit_code == 0 and fp8.exit_code == 0
    assert fp8.counts["done"] == 4 and fp8.counts.get("cache-hit", 0) == 0  # new keys: recomputed
    assert fp8.run_id != exact.run_id  # a different run identity, exact runs keep theirs
    exact_rows, fp8_rows = _results(exact), _results(fp8)
    assert not {r["key"] for r in exact_rows} & {r["key"] for r in fp8_rows}
    diffs = [np.abs(np.asarray(Image.open(a["output_uri"]), dtype=np.int16)
                    - np.asarray(Image.open(b["output_uri"]), dtype=np.int16))
             for a, b in zip(exact_rows, fp8_rows, strict=True)]
    assert any(d.max() > 0 for d in diffs) and all(d.mean() < 2.0 for d in diffs)  # approximate, close
    assert json.loads((fp8.run_dir / "config.json").read_text())["settings"]["fp8"] is True
    # The exact path is untouched by the option's existence: the same keys hit the cache again.
    again = run_batch(_config(manifest, out))
    assert again.run_id.startswith(exact.run_id) and again.counts.get("cache-hit", 0) == 4
    assert {r["key"] for r in _results(again)} == {r["key"] for r in exact_rows}
    fp8_attempts = [r for r in read_records(fp8.run_dir) if r["type"] == "attempt" and r["outcome"] == "ok"]
    assert {r["key"] for r in fp8_attempts} == {r["key"] for r in fp8_rows}  # computed, not hit


def test_cli_parses_fp8_off_by_default() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["run", "m.parquet", "--out", "o", "--fp8"])
    assert args.fp8 is True
    assert parser.parse_args(["run", "m.parquet", "--out", "o"]).fp8 is False


def test_actor_passes_fp8_to_the_factory_only_when_on() -> None:
    calls = []

    def factory(model, device, dtype, **kw):
        calls.append(kw)
        return object()

    EditorActor("a", TEST_MODEL, "cpu", "float32", editor_factory=factory)
    EditorActor("b", TEST_MODEL, "cpu", "float32", editor_factory=factory, fp8=True)
    EditorActor("c", TEST_MODEL, "cpu", "float32", editor_factory=factory, compile=True)
    assert calls == [{}, {"fp8": True}, {"compile": True}]


def test_fp8_on_a_local_gpu_without_fp8_is_a_config_error(monkeypatch) -> None:
    import torch

    from pipeline.errors import ConfigError
    from pipeline.runner import _check_fp8_device

    _check_fp8_device(True, "cpu")  # emulated: allowed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A10")
    _check_fp8_device(False, "cuda")  # exact runs never ask
    with pytest.raises(ConfigError, match=r"compute capability 8\.9.*A10.*without --fp8"):
        _check_fp8_device(True, "cuda")
