"""Chained edits (#21): `row:<row_id>` images are valid; a missing parent or a cycle is a
whole-manifest error naming the rows, found before any work (exit 2)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pipeline_helpers import REPO, write_images

from manifests.validate import chain_graph, validate_manifest
from pipeline.errors import ConfigError
from pipeline.manifest_input import check_manifest


def _manifest(folder: Path, rows: list[dict]) -> Path:
    write_images(folder / "images", 1)
    path = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


def _row(row_id: str, image: str, seed: int = 1) -> dict:
    return {"row_id": row_id, "image": image, "instruction": f"step {row_id}", "seed": seed}


SOURCE = "images/product_0.png"


def test_chain_refs_validate_and_give_the_graph(tmp_path):
    path = _manifest(tmp_path, [_row("s3", "row:s2"), _row("s1", SOURCE), _row("s2", "row:s1")])
    rows, problems = validate_manifest(path, check_images_exist=True)
    assert (rows, problems) == (3, [])
    graph = chain_graph(path)
    assert graph.parent == {0: 2, 2: 1}
    assert graph.depth() == {0: 2, 2: 1}


def test_manifest_without_chains_has_no_graph(tmp_path):
    path = _manifest(tmp_path, [_row("a", SOURCE), _row("b", SOURCE, seed=2)])
    assert chain_graph(path).parent == {}


def test_missing_parent_is_a_whole_manifest_error_naming_the_rows(tmp_path):
    path = _manifest(tmp_path, [_row("s1", SOURCE), _row("s2", "row:nope")])
    with pytest.raises(ConfigError) as err:
        check_manifest(str(path))
    text = str(err.value)
    assert "row 1 ('s2')" in text and "'nope'" in text and "no row has that row_id" in text


def test_cycle_is_a_whole_manifest_error_naming_every_row_of_it(tmp_path):
    path = _manifest(tmp_path, [_row("a", "row:c"), _row("b", "row:a"), _row("c", "row:b"),
                                _row("d", "row:d"), _row("e", SOURCE)])
    with pytest.raises(ConfigError) as err:
        check_manifest(str(path))
    text = str(err.value)
    assert "chain cycle: row 0 ('a') -> row 2 ('c') -> row 1 ('b') -> back to row 0 ('a')" in text
    assert "chain cycle: row 3 ('d') -> back to row 3 ('d'); it takes its own output" in text
    assert "'e'" not in text


def test_empty_chain_ref_is_a_row_problem(tmp_path):
    path = _manifest(tmp_path, [_row("s1", SOURCE), _row("s2", "row:")])
    _, problems = validate_manifest(path)
    assert [(p.row, p.column) for p in problems] == [(1, "image")]
    assert "names no row" in problems[0].reason


@pytest.mark.parametrize("image, phrase", [("row:c", "chain cycle"), ("row:zz", "no row has")])
def test_cli_refuses_before_any_work_exit_2(tmp_path, image, phrase):
    path = _manifest(tmp_path, [_row("b", "row:c"), _row("c", image)])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(path), "--out",
                           str(out), "--model", "tiny-random", "--device", "cpu", "--quiet"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert phrase in proc.stderr and "row 1 ('c')" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "runs").exists() or not any((out / "runs").glob("*/ledger.jsonl"))
    check = subprocess.run([sys.executable, "-m", "manifests", "validate", str(path)], cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode != 0 and phrase in check.stdout + check.stderr
