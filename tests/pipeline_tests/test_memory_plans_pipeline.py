"""Memory plans through the pipeline: every plan runs the tiny model end to end on a local Ray
(offload logic runs with device=cpu), the ledger carries the resident bytes the plan promises,
only the storage precision enters the cache key and run id, and a plan that cannot fit is
refused before any work (exit 2) naming the plan that would."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from pipeline_helpers import (
    TEST_MODEL,
    make_manifest,
    ray_cluster_fixture,
    read_records,
    run_config,
)

from kontext_core.quant.load import load_with_plan, resident_bytes
from kontext_core.quant.plans import PLANS
from pipeline import cli
from pipeline.errors import ConfigError
from pipeline.runner import RunConfig, run_batch

ray_cluster = ray_cluster_fixture()
_config = partial(run_config, batch_size=2, steps=2)


def _outputs(summary) -> dict[str, bytes]:
    return {r["row_id"]: Path(r["output_uri"]).read_bytes()
            for r in pq.read_table(summary.results).to_pylist()}


@pytest.fixture(scope="module")
def runs(ray_cluster, tmp_path_factory):
    """One run per plan, each in its own folder (offload plans share the resident keys: in one
    store they would be cache hits and never load the model)."""
    root = tmp_path_factory.mktemp("plans")
    manifest = make_manifest(root / "m", products=2, variants=1)
    return {name: run_batch(_config(manifest, root / name, memory_plan=name)) for name in PLANS}


def test_every_plan_runs_end_to_end_with_the_resident_bytes_it_promises(runs):
    for name, summary in runs.items():
        assert summary.exit_code == 0 and summary.counts["done"] == 2, name
        records = read_records(summary.run_dir)
        ok = [r for r in records if r["type"] == "attempt" and r["outcome"] == "ok"]
        # the editors load without T5 and CLIP (the text phase encoded the instructions first)
        promised = resident_bytes(load_with_plan(TEST_MODEL, plan=name, text=False))
        assert promised < resident_bytes(load_with_plan(TEST_MODEL, plan=name))
        assert {r["memory"]["plan"] for r in ok} == {name}
        assert {r["memory"]["resident_bytes"] for r in ok} == {promised}
        assert {r["memory"]["peak_device_bytes"] for r in ok} == {None}  # CPU: no peak count
        (load,) = [r for r in records if r["type"] == "actor-load"]
        assert load["memory"]["resident_bytes"] == promised
        plan = json.loads((summary.run_dir / "config.json").read_text())["settings"]["memory_plan"]
        assert (plan["name"], plan["storage"]) == (name, PLANS[name].storage)
        assert plan["estimated_peak_device_bytes"] > 0
    assert _resident(runs["fp8"]) < _resident(runs["resident"])  # one byte per castable weight


def _resident(summary) -> int:
    (load,) = [r for r in read_records(summary.run_dir) if r["type"] == "actor-load"]
    return load["memory"]["resident_bytes"]


def test_offload_keeps_keys_run_ids_and_pixels_storage_changes_them(runs):
    resident = runs["resident"]
    keys = {name: {r["key"] for r in pq.read_table(s.results).to_pylist()} for name, s in runs.items()}
    for name in ("model-offload", "partial-offload", "group-offload"):
        assert keys[name] == keys["resident"] and runs[name].run_id == resident.run_id
        assert _outputs(runs[name]) == _outputs(resident)
    for name in ("fp8-model-offload", "fp8-partial-offload", "fp8-group-offload"):
        assert keys[name] == keys["fp8"] and _outputs(runs[name]) == _outputs(runs["fp8"])
    assert not keys["fp8"] & keys["resident"] and runs["fp8"].run_id != resident.run_id


def test_the_default_plan_keeps_the_keys_and_run_id_of_runs_before_plans(runs, tmp_path):
    from pipeline.cache import ModelSettings, key_document
    from pipeline.model_info import resolve_model_info
    from pipeline.run_config import derive_settings

    info = resolve_model_info(TEST_MODEL)
    derived = derive_settings(RunConfig(manifest="m", memory="24GB"), info, "cpu")
    assert derived.memory.name == "resident" and "storage" not in derived.identity
    doc = key_document("a" * 64, "x", 1, derived.model, _row())
    assert "storage" not in doc
    fp8 = ModelSettings(model_fingerprint="f", dtype="float32", storage="fp8")
    assert key_document("a" * 64, "x", 1, fp8, _row())["storage"] == "fp8"


def _row():
    from pipeline.cache import RowSettings

    return RowSettings(steps=None, guidance=None, size=None, output={"format": "png", "encoder": {}})


def test_a_plan_that_cannot_fit_fails_before_any_work_naming_the_plan_that_would(tmp_path, capsys):
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    out = tmp_path / "out"
    # between model-offload's and resident's predicted peaks for the tiny model at 1024x1024
    code = cli.main(["run", str(manifest), "--out", str(out), "--model", TEST_MODEL, "--device", "cpu",
                     "--memory", "0.9757GB", "--memory-plan", "resident", "--no-report", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "memory plan resident needs" in err and "use --memory-plan model-offload" in err
    assert not (out / "runs").exists() or not list((out / "runs").iterdir())  # no run folder
    with pytest.raises(ConfigError, match="no memory plan fits 0.5 GiB"):
        run_batch(_config(manifest, out, memory="0.5GB"))
    with pytest.raises(ConfigError, match="memory plan 'tiny' is unknown; plans: resident"):
        run_batch(_config(manifest, out, memory_plan="tiny"))
    with pytest.raises(ConfigError, match="--fp8 .* and the memory plan fp8 "):
        run_batch(_config(manifest, out, memory_plan="fp8", fp8=True))
    assert torch.float8_e4m3fn  # fp8 storage needs it: present in this torch


def test_job_spec_and_cli_take_the_memory_settings(tmp_path):
    import textwrap

    from jobs.spec import SpecError, load_job_spec

    (tmp_path / "m.parquet").write_bytes(b"not read by validation")
    body = "name: n\nmanifest: m.parquet\nmodel: kontext-tiny\noutput: out\nsampler:\n  memory: {}\n{}"
    good = tmp_path / "good.yaml"
    good.write_text(body.format("24GB", "  memory_plan: fp8-model-offload\n"))
    spec = load_job_spec(good)
    assert (spec.sampler.memory, spec.sampler.memory_plan) == ("24GB", "fp8-model-offload")
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(body.format("lots", "  memory_plan: tiny\n")))
    with pytest.raises(SpecError) as info:
        load_job_spec(bad)
    text = str(info.value)
    assert "sampler.memory" in text and "'lots' is not understood" in text
    assert "sampler.memory_plan" in text and "'tiny' is not a memory plan" in text

    args = cli.build_parser().parse_args(["run", "m.parquet", "--memory", "24GB", "--memory-plan", "fp8"])
    config = RunConfig.from_args(args, "m.parquet")
    assert (config.memory, config.memory_plan) == ("24GB", "fp8")
    default = RunConfig.from_args(cli.build_parser().parse_args(["run", "m.parquet"]), "m.parquet")
    assert (default.memory, default.memory_plan) == ("auto", None)
