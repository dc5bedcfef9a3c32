"""`kontext-batch run`'s wiring of the plan-only and summary pieces: --dry-run plans and stops
(no run folder, no model), --rehash-sources reaches the run config, the end-of-run summary
groups failure reasons, and the planning bar shows no hit/failure counts it never kept."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from pipeline_helpers import TEST_MODEL, make_manifest

from jobs import cli as entry
from pipeline.cli import build_parser
from pipeline.progress import RunProgress
from pipeline.run_config import RunConfig
from pipeline.runner import RunSummary, print_summary


def _main(argv: list[str]) -> int:
    try:
        return entry.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path: Path, capsys) -> None:
    manifest = make_manifest(tmp_path / "m", products=3, variants=2)
    out = tmp_path / "out"
    code = _main(["run", str(manifest), "--out", str(out), "--model", TEST_MODEL,
                  "--device", "cpu", "--dry-run"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "6 rows: 0 cache hits, 6 to generate" in text and "(new)" in text
    assert "estimate: none" in text  # no earlier run in OUT to price images by
    assert not (out / "runs").exists()  # no run folder, no ledger


def test_dry_run_json_is_one_document(tmp_path: Path, capsys) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    code = _main(["run", str(manifest), "--out", str(tmp_path / "out"), "--model", TEST_MODEL,
                  "--device", "cpu", "--dry-run", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["dry_run"] is True
    assert (doc["rows"], doc["to_generate"], doc["cache_hits"]) == (2, 2, 0)


def test_dry_run_of_a_bad_flag_is_a_config_error(tmp_path: Path, capsys) -> None:
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    code = _main(["run", str(manifest), "--out", str(tmp_path / "out"), "--model", TEST_MODEL,
                  "--steps", "500", "--dry-run"])
    assert code == 2 and "--steps" in capsys.readouterr().err


def test_rehash_sources_flag_reaches_the_run_config(tmp_path: Path) -> None:
    args = build_parser().parse_args(["run", "m.parquet", "--rehash-sources"])
    assert RunConfig.from_args(args, "m.parquet").rehash_sources is True
    args = build_parser().parse_args(["run", "m.parquet"])
    assert RunConfig.from_args(args, "m.parquet").rehash_sources is False


def test_summary_lists_failure_reasons_grouped(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    rows = [{"row_id": f"p{i}", "status": "failed", "error_class": "bad-row",
             "reason": f"image not found: '/data/p{i}.png'"} for i in range(3)]
    rows.append({"row_id": "ok", "status": "done", "error_class": None, "reason": None})
    pq.write_table(pa.Table.from_pylist(rows), run_dir / "results.parquet")
    summary = RunSummary(run_id="r", run_dir=run_dir, store="s", results=run_dir / "results.parquet",
                         counts={"done": 1, "cache-hit": 0, "failed": 3, "not-run": 0},
                         status="failed-rows", exit_code=1)
    buffer = io.StringIO()
    print_summary(summary, file=buffer)
    text = buffer.getvalue()
    assert "3 × bad-row: image not found: '/data/p0.png' (row 'p0' and 2 more)" in text, text


@pytest.mark.parametrize("counts", [True, False])
def test_planning_bar_shows_counts_only_when_it_keeps_them(counts: bool) -> None:
    bar = RunProgress(2, desc="planning", disable=False, counts=counts)
    bar.row_done(2)  # planning counts rows planned, not hits or failures
    shown = bar._bar.postfix or ""  # noqa: SLF001 - what tqdm draws after the count
    bar.close()
    assert ("hits=" in shown) == counts
