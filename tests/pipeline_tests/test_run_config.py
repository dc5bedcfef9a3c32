"""pipeline.run_config: one RunConfig filled the same way by the CLI and by jobs, one derivation
of row defaults / key settings / run identity (run and dry run), one writer and reader of
RUN_DIR/config.json; the progress bar's start counts and the after-ray.init hook."""

from __future__ import annotations

import json
import textwrap
from dataclasses import fields
from pathlib import Path

import pytest

from jobs.runner import run_config as job_run_config
from jobs.spec import load_job_spec
from pipeline import cli, cluster
from pipeline.model_info import ModelInfo
from pipeline.progress import RunProgress
from pipeline.reports.pricing import frozen_pricing_entry
from pipeline.run_config import (
    ConfigDocument,
    RunConfig,
    derive_settings,
    read_config_file,
    write_config_file,
)

# run flags that are not RunConfig fields (what they do is the CLI's own)
CLI_ONLY = {"demo", "json", "dry_run", "func", "command", "manifest", "image_root", "no_report",
            "quiet"}
INFO = ModelInfo(spec="kontext-tiny", preset="kontext-tiny", fingerprint="f" * 64,
                 default_steps=8, default_guidance=2.5)


def _run_args(*argv: str):
    return cli.build_parser().parse_args(["run", "m.parquet", *argv])


def test_every_run_flag_reaches_the_config():
    args = _run_args("--out", "o", "--store", "s3://b/p", "--model", "mdl", "--address", "auto",
                     "--device", "cpu", "--dtype", "bfloat16", "--batch-size", "3",
                     "--actors", "2", "--steps", "9", "--guidance", "1.5",
                     "--output-format", "webp", "--run-id", "r1", "--max-attempts", "5",
                     "--image-root", "/a", "--image-root", "s3://b/photos/", "--step-cache",
                     "0.2", "--fp8", "--compile", "--max-pixels", "99", "--verify-cache",
                     "--no-report", "--max-review-rows", "7", "--quiet")
    config = RunConfig.from_args(args, "m.parquet")
    assert config == RunConfig(
        manifest="m.parquet", out="o", store="s3://b/p", model="mdl", address="auto",
        device="cpu", dtype="bfloat16", batch_size=3, actors=2, steps=9, guidance=1.5,
        output_format="webp", run_id="r1", max_attempts=5, image_roots=["/a", "s3://b/photos/"],
        step_cache=0.2, fp8=True, compile=True, max_pixels=99, verify_cache=True,
        reports=False, max_review_rows=7, progress=False)
    names = {f.name for f in fields(RunConfig)}
    assert set(vars(args)) - CLI_ONLY <= names  # no flag is dropped on the way


def test_flag_defaults_are_the_library_defaults():
    assert RunConfig.from_args(_run_args(), "m.parquet") == RunConfig(manifest="m.parquet")


def test_a_job_fills_the_config_from_its_sampler_and_ray_sections(tmp_path):
    (tmp_path / "m.parquet").write_bytes(b"x")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(textwrap.dedent("""\
        name: nightly
        manifest: m.parquet
        model: kontext-tiny
        output: out
        sampler: {steps: 6, guidance: 3, output_format: jpg, dtype: float32, batch_size: 2,
                  step_cache: 0.1, fp8: true, compile: true}
        ray: {address: auto, actors: 3, device: cpu, max_attempts: 4}
        """))
    spec = load_job_spec(spec_file)
    config = job_run_config(spec, "nightly-2026-01-02", tmp_path / "m.parquet", ["/cat"],
                            progress=False, num_cpus=2, retry_backoff_s=0.5)
    assert (config.steps, config.guidance, config.output_format, config.dtype,
            config.batch_size, config.step_cache, config.fp8, config.compile) == \
        (6, 3.0, "jpeg", "float32", 2, 0.1, True, True)
    assert (config.address, config.actors, config.device, config.max_attempts) == \
        ("auto", 3, "cpu", 4)
    assert (config.run_id, config.out, config.image_roots, config.image_roots_setting,
            config.num_cpus, config.retry_backoff_s, config.progress) == \
        ("nightly-2026-01-02", str(tmp_path / "out"), ["/cat"], "image_roots", 2, 0.5, False)


def test_derived_settings_fill_row_defaults_and_name_approximations_in_the_identity():
    exact = derive_settings(RunConfig(manifest="m"), INFO, "cuda")
    assert (exact.dtype, exact.defaults.steps, exact.defaults.guidance,
            exact.defaults.output_format) == ("bfloat16", 8, 2.5, "png")
    assert "step_cache" not in exact.identity and "fp8" not in exact.identity
    fast = derive_settings(RunConfig(manifest="m", steps=4, output_format="JPG", step_cache=0.3,
                                     fp8=True), INFO, "cpu")
    assert (fast.dtype, fast.defaults.steps, fast.defaults.output_format) == \
        ("float32", 4, "jpeg")
    assert fast.identity["step_cache"] == 0.3 and fast.identity["fp8"] is True
    assert fast.model.approximations == {"fp8": True, "step_cache": 0.3}
    settings = fast.record(RunConfig(manifest="m", steps=4), "/store")
    assert "manifest" not in settings and "out" not in settings
    assert (settings["device"], settings["steps"], settings["store"]) == ("cpu", 4, "/store")


def test_config_file_is_written_whole_and_read_back(tmp_path: Path):
    doc = ConfigDocument(run_id="r", manifest="/m.parquet", manifest_sha256="ab", rows_total=3,
                         model="kontext-tiny", preset="kontext-tiny", fingerprint="f",
                         settings={"steps": 8}, out="/out", store="/out/store",
                         extra={"pricing": {"currency": "USD"}})
    path = write_config_file(tmp_path, doc)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left
    on_disk = json.loads(path.read_text())
    assert on_disk == read_config_file(tmp_path)
    assert on_disk["settings"] == {"steps": 8} and on_disk["pricing"] == {"currency": "USD"}
    assert frozen_pricing_entry(tmp_path) == {"currency": "USD"}
    path.write_text("{not json")
    assert read_config_file(tmp_path) == {} and frozen_pricing_entry(tmp_path) is None
    assert read_config_file(tmp_path / "nowhere") == {}


def test_progress_starts_at_the_rows_planning_finished(capsys):
    bar = RunProgress(10, disable=False)
    bar.start_at(hits=3, failed=1, done=2)
    bar.row_done()
    bar.close()
    assert (bar.hits, bar.failed, bar.done) == (3, 1, 3)
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert " 7/10 " in last and "hits=3" in last and "failed=1" in last, last


@pytest.mark.parametrize("fails", [False, True])
def test_after_ray_init_runs_once_per_connect_while_set(monkeypatch, fails):
    import ray

    calls: list[str] = []

    def start_local(num_cpus=None):
        calls.append("init")
        if fails:
            raise RuntimeError("no memory")

    monkeypatch.setattr(cluster, "start_local", start_local)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_COLOR_PREFIX", "0")
    with cluster.after_ray_init(lambda: calls.append("hook")):
        try:
            cluster.connect(None)
        except Exception as exc:  # noqa: BLE001 - the failing start is the case under test
            assert "cannot start a local Ray" in str(exc)
    cluster.connect(None) if not fails else None
    assert calls == ["init", "hook"] + ([] if fails else ["init"])
