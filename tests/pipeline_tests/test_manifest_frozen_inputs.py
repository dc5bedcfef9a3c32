"""Inputs checked before any work, and a run that reads its manifest once.

Each case goes through the real entry points (run_batch, the CLI in this process, or the CLI
as a subprocess where the old behaviour hung). The manifests here have no runnable row (their
images are missing), so no run starts Ray or loads a model.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardening_helpers import cli_env
from manifest_damage import damaged_parquet
from pipeline_helpers import REPO, TEST_MODEL

from pipeline import cli, runner
from pipeline.errors import ConfigError
from pipeline.runner import RunConfig, run_batch

ORIGINAL = {"image": ["images/gone-0.png", "images/gone-1.png"],
            "instruction": ["make it blue", "make it red"], "seed": [1, 2],
            "meta_sku": ["SKU-1", "SKU-2"]}


def _write(path: Path, columns: dict[str, list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def _config(manifest: Path, out: Path, **more) -> RunConfig:
    return RunConfig(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu",
                     progress=False, reports=False, **more)


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, err.getvalue()


def _run_argv(manifest: Path, out: Path, *more: str) -> list[str]:
    return ["run", str(manifest), "--out", str(out), "--model", TEST_MODEL, "--device", "cpu",
            "--quiet", "--no-report", *more]


def _at_point(monkeypatch: pytest.MonkeyPatch, point: str, action) -> None:
    """Do ``action()`` when the run passes the named kill point (mid-run, after planning)."""
    original = runner.kill_point

    def hook(name: str) -> None:
        if name == point:
            action()
        original(name)
    monkeypatch.setattr(runner, "kill_point", hook)


def _results(summary) -> list[dict]:
    return pq.read_table(summary.results).to_pylist()


# -- the manifest changes or moves while the run goes on ------------------------
def test_results_describe_the_manifest_read_even_if_it_is_rewritten_mid_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _write(tmp_path / "m" / "manifest.parquet", ORIGINAL)
    other = {"image": ["x.png"] * 3, "instruction": ["other"] * 3, "seed": [7, 8, 9],
             "meta_sku": ["NEW"] * 3}
    _at_point(monkeypatch, "after-plan", lambda: _write(manifest, other))  # in place, 3 rows
    summary = run_batch(_config(manifest, tmp_path / "out"))
    rows = _results(summary)
    assert summary.exit_code == 1 and [r["status"] for r in rows] == ["failed", "failed"]
    for column, values in ORIGINAL.items():
        assert [r[column] for r in rows] == values, column
    assert all("gone-" in r["reason"] for r in rows)


def test_a_manifest_moved_mid_run_still_gets_its_results(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _write(tmp_path / "m" / "manifest.parquet", ORIGINAL)
    _at_point(monkeypatch, "after-plan",
              lambda: manifest.rename(tmp_path / "moved.parquet"))
    summary = run_batch(_config(manifest, tmp_path / "out"))
    rows = _results(summary)
    assert summary.exit_code == 1
    assert [r["instruction"] for r in rows] == ORIGINAL["instruction"]
    assert [r["meta_sku"] for r in rows] == ORIGINAL["meta_sku"]


# -- positional ids never take a given id ---------------------------------------
def test_positional_ids_of_bad_rows_do_not_collide_with_given_ids(tmp_path: Path) -> None:
    columns = {"image": ["a.png"] * 4, "instruction": ["make it blue"] * 4,
               "seed": [1, 2, 3, 4],
               # row 0's id is unusable (empty), so it needs a positional id; a later good row
               # is already called row-0 and another row-0-2
               "row_id": [" ", "row-0", "row-0-2", "p-3"]}
    manifest = _write(tmp_path / "m" / "manifest.parquet", columns)
    summary = run_batch(_config(manifest, tmp_path / "out"))
    ids = [r["row_id"] for r in _results(summary)]
    assert ids == ["row-0-3", "row-0", "row-0-2", "p-3"]
    assert summary.exit_code == 1


# -- a FIFO as the manifest ---------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_named_pipe_as_manifest_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "manifest.parquet"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "pipeline.cli", *_run_argv(fifo, out)]
    # Before the fix this blocked in open() forever (and ignored SIGTERM): the timeout fails it.
    done = subprocess.run(args, cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "named pipe (FIFO), not a regular file" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


# -- a damaged data page behind a valid footer --------------------------------
def test_a_damaged_data_page_is_a_whole_file_error_before_any_work(tmp_path: Path) -> None:
    manifest = damaged_parquet(tmp_path / "m" / "manifest.parquet")
    out = tmp_path / "out"
    code, stderr = _cli(_run_argv(manifest, out))
    assert code == 2, stderr
    assert "is damaged" in stderr and "write the file again" in stderr
    assert repr(str(manifest)) in stderr
    assert not out.exists()


def test_validate_command_reports_a_damaged_page(tmp_path: Path, capsys) -> None:
    from manifests.__main__ import main

    manifest = damaged_parquet(tmp_path / "manifest.parquet")
    assert main(["validate", str(manifest)]) == 2
    assert "is damaged" in capsys.readouterr().err


# -- --store with a scheme pyarrow does not know ------------------------------
def test_an_unknown_store_scheme_is_refused_before_any_folder_is_made(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m" / "manifest.parquet", ORIGINAL)
    out = tmp_path / "out"
    code, stderr = _cli(_run_argv(manifest, out, "--store", "foo://bucket/prefix"))
    assert code == 2, stderr
    assert "--store 'foo://bucket/prefix'" in stderr and "scheme 'foo'" in stderr
    assert "s3" in stderr  # names what would work
    assert not out.exists()


def test_a_store_that_cannot_be_opened_is_a_config_error(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A known scheme whose filesystem cannot be opened here (no JVM for hdfs, no network):
    exit 2 naming the store, before the run folder exists."""
    def refuse(uri: str):
        raise OSError(f"Unable to load libjvm for {uri}")

    monkeypatch.setattr("pipeline.store.filesystem_for", refuse)
    manifest = _write(tmp_path / "m" / "manifest.parquet", ORIGINAL)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=r"--store 'hdfs://namenode/x' cannot be opened: "
                                          r"Unable to load libjvm"):
        run_batch(_config(manifest, out, store="hdfs://namenode/x"))
    assert not (out / "runs").exists()


# -- --out that cannot be written ----------------------------------------------
def test_out_below_a_regular_file_is_refused(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m" / "manifest.parquet", ORIGINAL)
    (tmp_path / "a-file").write_text("x")
    code, stderr = _cli(_run_argv(manifest, tmp_path / "a-file" / "out"))
    assert code == 2, stderr
    assert f"{str(tmp_path / 'a-file')!r} is a file, not a folder" in stderr
    assert "Traceback" not in stderr


def test_out_on_a_read_only_filesystem_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """EROFS cannot be made without root privileges of the mount kind, so the filesystem
    reports itself read-only (statvfs) for this one folder, as a read-only mount does."""
    manifest = _write(tmp_path / "m" / "manifest.parquet", ORIGINAL)
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.statvfs

    class ReadOnly:
        def __init__(self, result: os.statvfs_result) -> None:
            self._result = result
            self.f_flag = result.f_flag | os.ST_RDONLY

        def __getattr__(self, name: str):
            return getattr(self._result, name)

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly(real(p)) if Path(p) == ro
                        else real(p))
    code, stderr = _cli(_run_argv(manifest, ro / "out"))
    assert code == 2, stderr
    assert f"the folder {str(ro)!r} is on a read-only filesystem" in stderr
    assert "--out" in stderr and not (ro / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in a 0o555 folder")
def test_out_in_a_folder_without_write_permission_is_refused(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m" / "manifest.parquet", ORIGINAL)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, stderr = _cli(_run_argv(manifest, locked / "out"))
    finally:
        locked.chmod(0o755)
    assert code == 2, stderr
    assert "is not writable by this user" in stderr


# -- hints in the manifest's own words ------------------------------------------------
def test_a_prompt_column_is_told_to_be_instruction(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m" / "manifest.parquet",
                      {"image": ["a.png"], "prompt": ["make it blue"], "seed": [1]})
    code, stderr = _cli(_run_argv(manifest, tmp_path / "out"))
    assert code == 2
    assert "unknown column 'prompt' (did you mean 'instruction'?)" in stderr


def test_an_image_outside_names_the_cli_flag_and_a_job_names_its_key(tmp_path: Path) -> None:
    manifest = _write(tmp_path / "m" / "manifest.parquet",
                      {"image": ["../outside.png"], "instruction": ["x"], "seed": [1]})
    cli_run = run_batch(_config(manifest, tmp_path / "out"))
    job_run = run_batch(_config(manifest, tmp_path / "out-job",
                                image_roots_setting="image_roots"))
    cli_reason = _results(cli_run)[0]["reason"]
    job_reason = _results(job_run)[0]["reason"]
    assert cli_reason.endswith("allow its folder explicitly with --image-root")
    assert job_reason.endswith("allow its folder explicitly with image_roots")
