"""The CLI's conventions: --version, usage and did-you-mean for a
mistyped option or command, run ids that are one folder name, `kontext-batch manifest
validate|build` with the same options as `python -m manifests`, `run --json`, what `--quiet`
asks of Ray, and that Ray's token auth is only switched off for the local Ray a run starts.

The run itself is replaced by a function where one is needed: no Ray starts here
(tests/pipeline_tests/test_local_ray_processes.py runs the real thing)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pipeline_helpers import make_manifest

from jobs import cli as entry  # the installed ``kontext-batch`` (jobs.cli:main)
from manifests.__main__ import main as manifests_main
from pipeline import cluster
from pipeline.run_ids import check_run_id, run_id_problem
from pipeline.runner import RunSummary


def _exit_code(argv: list[str]) -> int:
    """entry.main's return value, or the code argparse exits with."""
    try:
        return entry.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_version_prints_the_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kontext-batch 0.") and "ray 2.60.0" in out


def test_unknown_command_lists_every_command_and_the_closest(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["rn", "x.parquet"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'rn'" in err and "did you mean 'run'?" in err
    for command in ("run", "report", "manifest", "job"):
        assert command in err.split("commands:")[1]
    assert _exit_code(["manifest", "vaildate", "x.parquet"]) == 2
    assert "did you mean 'validate'?" in capsys.readouterr().err


def test_mistyped_run_option_shows_runs_usage_and_the_closest_option(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["run", "x.parquet", "--quite", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: kontext-batch run ")
    assert "kontext-batch run: error: unrecognized arguments: --quite" in err
    assert "did you mean --quiet?" in err
    assert _exit_code(["run", "x.parquet", "--batch-sise=2"]) == 2
    assert "did you mean --batch-size?" in capsys.readouterr().err


@pytest.mark.parametrize("run_id, reason", [
    ("../..", "path separator"), ("/abs/runs", "path separator"), ("a/b", "path separator"),
    ("..", "parent"), (".", "runs folder"), ("", "empty"), ("-x", "start with a letter or digit"),
    ("run id", "' '"), ("x" * 129, "129 characters")])
def test_run_id_that_is_not_one_folder_name_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], run_id: str, reason: str) -> None:
    out = tmp_path / "out"
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    assert _exit_code(["run", str(manifest), "--out", str(out), f"--run-id={run_id}"]) == 2
    err = capsys.readouterr().err
    assert f"argument --run-id: {run_id!r} is not usable as a run id" in err
    assert reason in err and "no path separators" in err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "abs").exists()


def test_run_id_rule() -> None:
    for good in ("run-0123abcd", "nightly-2031-05-06", "night.v2_a-3", "A" * 128):
        assert run_id_problem(good) is None and check_run_id(good) == good
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--run-id '\.\./x' is not usable"):
        check_run_id("../x")


def _write_rows(path: Path, images: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"image": images, "instruction": ["make it blue"] * len(images),
                  "seed": list(range(len(images)))}).to_parquet(path, index=False)
    return path


def test_manifest_validate_is_a_kontext_batch_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = make_manifest(tmp_path / "good", products=2, variants=1)
    assert _exit_code(["manifest", "validate", str(good)]) == 0
    assert f"{good}: 2 rows, no problems" in capsys.readouterr().out
    missing = _write_rows(tmp_path / "bad" / "manifest.parquet", ["images/nope.png"])
    # A missing image is not looked for unless asked, and the output says how to ask.
    assert _exit_code(["manifest", "validate", str(missing)]) == 0
    assert "add --check-images" in capsys.readouterr().out
    assert _exit_code(["manifest", "validate", str(missing), "--check-images"]) == 2
    err = capsys.readouterr().err
    assert "1 problem" in err and "nope.png" in err
    assert manifests_main(["validate", str(missing), "--check-images"]) == 2  # same command


def _catalog(tmp_path: Path) -> tuple[Path, Path]:
    make_manifest(tmp_path / "cat", products=2, variants=1)  # writes cat/images/product_*.png
    catalog = tmp_path / "cat" / "catalog.csv"
    catalog.write_text("product_id,image\np0,images/product_0.png\np1,images/product_1.png\n")
    variants = tmp_path / "variants.yaml"
    variants.write_text("variants:\n  - name: white\n    instruction: put it on white\n")
    return catalog, variants


def test_manifest_build_takes_seeds_in_both_clis_and_the_old_spelling_still_works(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    catalog, variants = _catalog(tmp_path)
    common = ["build", "--catalog", str(catalog), "--variants", str(variants)]
    outs = [tmp_path / f"m{i}.parquet" for i in range(3)]
    assert _exit_code(["manifest", *common, "--seeds", "2", "-o", str(outs[0])]) == 0
    assert manifests_main([*common, "--seeds", "2", "-o", str(outs[1])]) == 0
    capsys.readouterr()
    assert manifests_main([*common, "--seeds-per-variant", "2", "--out", str(outs[2])]) == 0
    captured = capsys.readouterr()
    assert "--seeds-per-variant is deprecated; use --seeds" in captured.err
    frames = [pd.read_parquet(out).drop(columns="image") for out in outs]
    assert len(frames[0]) == 4
    for frame in frames[1:]:
        pd.testing.assert_frame_equal(frames[0], frame)
    assert _exit_code(["manifest", *common, "--seeds", "2", "--seeds-per-variant", "3",
                       "-o", str(tmp_path / "x.parquet")]) == 2
    assert "disagree" in capsys.readouterr().err
    # The old spelling is accepted but not advertised.
    assert _exit_code(["manifest", "build", "--help"]) == 0
    assert "--seeds-per-variant" not in capsys.readouterr().out


def test_run_help_points_to_what_exists(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["run", "--help"]) == 0
    text = capsys.readouterr().out
    assert "manifests/README" not in text
    assert "kontext-batch manifest validate" in text and "--check-images" in text
    assert "--json" in text


# -- run --json, --quiet, auth: the run replaced by a function --------------------------------
def _summary(tmp_path: Path) -> RunSummary:
    run_dir = tmp_path / "out" / "runs" / "run-1"
    return RunSummary(run_id="run-1", run_dir=run_dir, store=str(tmp_path / "out" / "store"),
                      results=run_dir / "results.parquet", status="failed-rows",
                      counts={"done": 2, "cache-hit": 1, "failed": 1, "not-run": 0},
                      exit_code=1, reports={"md": str(run_dir / "report.md")})


def _fake_run(seen: dict[str, Any], summary: RunSummary):
    def run_batch(config: Any, **kwargs: Any) -> RunSummary:
        seen["init_options"] = cluster._init_options()
        seen["auth"] = os.environ.get("RAY_AUTH_MODE")
        return summary

    return run_batch


def test_run_json_prints_one_document_on_stdout(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("pipeline.runner.run_batch", _fake_run(seen, _summary(tmp_path)))
    assert entry.main(["run", "--demo", "--out", str(tmp_path / "out"), "--json"]) == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)  # stdout is the document, nothing else
    run_dir = tmp_path / "out" / "runs" / "run-1"
    assert doc["run_id"] == "run-1" and doc["status"] == "failed-rows"
    assert doc["exit_code"] == 1
    assert doc["counts"] == {"done": 2, "cache-hit": 1, "failed": 1, "not-run": 0}
    assert doc["run_dir"] == str(run_dir) and doc["results"] == str(run_dir / "results.parquet")
    assert doc["ledger"] == str(run_dir / "ledger.jsonl")
    assert doc["reports"] == {"md": str(run_dir / "report.md")}
    assert "run run-1: failed-rows" in captured.err  # the summary for people
    # The actors' output would land on stdout: it is not forwarded with --json.
    assert seen["init_options"]["log_to_driver"] is False


def test_run_json_reports_a_config_error_as_a_document_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert entry.main(["run", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "o"),
                       "--json"]) == 2
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["exit_code"] == 2 and doc["status"] == "error"
    assert "missing.parquet" in doc["error"] and "missing.parquet" in captured.err


def test_quiet_asks_ray_for_no_info_lines_no_actor_output_and_no_bars(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr("pipeline.runner.run_batch", _fake_run(seen, _summary(tmp_path)))
    entry.main(["run", "--demo", "--out", str(tmp_path / "out"), "--quiet"])
    quiet = seen["init_options"]
    assert quiet["log_to_driver"] is False and quiet["logging_level"] == logging.WARNING
    assert quiet["runtime_env"]["env_vars"]["TQDM_DISABLE"] == "1"
    assert quiet["runtime_env"]["env_vars"]["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    entry.main(["run", "--demo", "--out", str(tmp_path / "out")])
    loud = seen["init_options"]
    assert loud["log_to_driver"] is True and "logging_level" not in loud
    assert "runtime_env" not in loud
    assert cluster._init_options()["log_to_driver"] is True  # only while the run lasts
    capsys.readouterr()


def test_the_cli_does_not_switch_ray_auth_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setattr("pipeline.runner.run_batch", _fake_run(seen, _summary(tmp_path)))
    entry.main(["run", "--demo", "--out", str(tmp_path / "out"), "--address", "ray://h:10001"])
    assert seen["auth"] is None
    capsys.readouterr()


class _RecordingInit:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        from ray._private import ray_constants

        self.calls.append({**kwargs, "auth": os.environ.get("RAY_AUTH_MODE"),
                           "token": os.environ.get("RAY_AUTH_TOKEN"),
                           "colour": os.environ.get("RAY_COLOR_PREFIX"),
                           "multi_node": ray_constants.ENABLE_RAY_CLUSTER,
                           "env": os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")})


def test_joining_a_cluster_keeps_the_users_auth_and_a_local_ray_is_loopback_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray
    from ray._private import ray_constants

    init = _RecordingInit()
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.delenv("RAY_COLOR_PREFIX", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr("pipeline.local_ray.record_local_ray", lambda: None)
    # no Ray started, so this process's Ray config must not switch to token auth either
    monkeypatch.setattr(cluster, "_reload_ray_auth", lambda: None)
    assert cluster.connect("ray://head:10001") is True
    joined = init.calls[-1]
    assert joined["address"] == "ray://head:10001" and joined["auth"] is None
    assert "_node_ip_address" not in joined and joined["multi_node"] is True
    # pytest captures stdout: not a terminal, so Ray forwards actor lines without ANSI colour
    # (jobs' log files included: every run, whichever command, connects here).
    assert joined["colour"] == "0"
    assert cluster.connect(None, num_cpus=1) is True
    local = init.calls[-1]
    assert local["address"] == "local" and local["_node_ip_address"] == "127.0.0.1"
    assert local["multi_node"] is False and local["env"] == "0"  # Ray's single-node mode
    # The loopback Ray asks for a token too: a fresh one, in the environment only.
    assert local["auth"] == "token" and local["token"] is not None
    assert len(local["token"]) == 64 and int(local["token"], 16) >= 0
    assert joined["token"] is None  # joining a cluster set nothing
    # Restored once started, so a later ray.init in this process can join a real cluster.
    assert ray_constants.ENABLE_RAY_CLUSTER is True
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ


def test_a_users_own_ray_auth_mode_is_kept_for_a_local_ray(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    init = _RecordingInit()
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr("pipeline.local_ray.record_local_ray", lambda: None)
    # no Ray started, so this process's Ray config must not switch to token auth either
    monkeypatch.setattr(cluster, "_reload_ray_auth", lambda: None)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    assert cluster.connect(None, num_cpus=1) is True
    assert init.calls[-1]["auth"] == "disabled" and init.calls[-1]["token"] is None
    monkeypatch.delenv("RAY_AUTH_MODE")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "the-users-own-token")
    assert cluster.connect(None, num_cpus=1) is True
    assert init.calls[-1]["auth"] == "token" and init.calls[-1]["token"] == "the-users-own-token"
