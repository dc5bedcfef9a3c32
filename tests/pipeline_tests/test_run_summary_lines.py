"""The end-of-run summary's lines from the run folder: the failed rows' reasons
grouped with counts, the flagged and cut rows (results_columns.summary_lines, reused), and
'resuming: N of M already done' for a resumed run."""

from __future__ import annotations

from pathlib import Path

import ledger_records
import pyarrow as pa
import pyarrow.parquet as pq
from ledger_records import record, run_end, run_start, write_ledger
from synthetic_runs import make_synthetic_run

from pipeline.reports import generate_reports
from pipeline.resume import read_history
from pipeline.run_summary import (
    failure_lines,
    reason_pattern,
    resume_line,
    resume_line_from_history,
    run_summary_lines,
)


def write_results(run_dir: Path, rows: list[dict]) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    full = [{"row_id": r["row_id"], "status": r.get("status", "failed"),
             "error_class": r.get("error_class"), "reason": r.get("reason"),
             "flags": r.get("flags"), "truncated": r.get("truncated"), "notes": r.get("notes")}
            for r in rows]
    schema = pa.schema([("row_id", pa.string()), ("status", pa.string()),
                        ("error_class", pa.string()), ("reason", pa.string()),
                        ("flags", pa.list_(pa.string())), ("truncated", pa.bool_()),
                        ("notes", pa.string())])
    pq.write_table(pa.Table.from_pylist(full, schema=schema), run_dir / "results.parquet")
    return run_dir


def test_failed_rows_are_grouped_by_reason_most_frequent_first(tmp_path):
    missing = [{"row_id": f"p{i}", "error_class": "bad-row",
                "reason": f"image not found: '/data/p{i}.png'"} for i in range(4)]
    rows = [
        {"row_id": "ok-1", "status": "done"},
        {"row_id": "s1", "error_class": "bad-row", "reason": "seed must be >= 0 (got -1)"},
        *missing,
        {"row_id": "t1", "error_class": "transient", "reason": "CUDA out of memory"},
        {"row_id": "s2", "error_class": "bad-row", "reason": "seed must be >= 0 (got -7)"},
        {"row_id": "e1", "error_class": "bad-row", "reason": "instruction is empty"},
        {"row_id": "x1", "error_class": None, "reason": None},
    ]
    run_dir = write_results(tmp_path / "run", rows)
    assert failure_lines(run_dir) == [
        "  failed:   9 row(s), by reason (results.parquet: status 'failed', column reason):",
        "    4 × bad-row: image not found: '/data/p0.png' (row 'p0' and 3 more)",
        "    2 × bad-row: seed must be >= 0 (got -1) (row 's1' and 1 more)",
        "    1 × transient: CUDA out of memory (row 't1')",
        "    ... and 2 row(s) with 2 other reason(s)",
    ]
    assert failure_lines(run_dir, top=10)[-1] == "    1 × error: no reason recorded (row 'x1')"


def test_a_run_without_failures_or_results_has_no_failure_lines(tmp_path):
    assert failure_lines(write_results(tmp_path / "run", [{"row_id": "a", "status": "done"}])) == []
    assert failure_lines(tmp_path / "nothing-here") == []
    assert run_summary_lines(tmp_path / "nothing-here") == []


def test_reason_pattern_blanks_quoted_parts_and_numbers_only():
    assert reason_pattern("image 'a.png' is 9000x9000 (limit 4096)") == \
        "image '…' is #x# (limit #)"
    assert reason_pattern('CUDA out of memory') == "CUDA out of memory"


def test_a_reported_run_lists_failures_then_flags_and_cuts(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=3, variants=4, failed=(1, 4),
                             unchanged=(5,), spread=(6,))
    generate_reports(run.run_dir, progress=False)
    lines = run_summary_lines(run.run_dir)
    assert lines[0].startswith("  failed:   2 row(s), by reason")
    # the two reasons differ in a number only: one group, shown with its first row
    assert lines[1] == "    2 × bad-row: image product-0.png cannot be decoded (row 'p0-v1' and 1 more)"
    assert lines[2] == "  flags:    1 spread, 1 unchanged (review.html; results column flags)"


def ledger(run_dir: Path, records: list[dict]) -> None:
    """The records in order, one second apart, under the run folder's id."""
    write_ledger(run_dir / "ledger.jsonl",
                 [rec | {"run_id": run_dir.name, "ts": float(i)} for i, rec in enumerate(records)])


def attempt(index: int, outcome: str, n: int = 1) -> dict:
    return ledger_records.attempt(None, index, outcome, "a", 1.0, 2.0, attempt_no=n, device_type="CPU")


def resumed_ledger(run_dir: Path) -> None:
    start = run_start(None, 10, model="m")
    ledger(run_dir, [
        start, attempt(0, "ok"), attempt(1, "cache-hit"), attempt(2, "retry-scheduled"),
        attempt(3, "failed-permanent"),
        {**start, "invocation": 2, "resumed": True}, attempt(4, "ok"), attempt(2, "ok", 2),
        run_end(None, "interrupted"),
        {**start, "invocation": 3, "resumed": True}, attempt(5, "ok"),
    ])


def test_a_resumed_run_says_how_much_was_already_done(tmp_path):
    run_dir = tmp_path / "run"
    resumed_ledger(run_dir)
    # before the last run-start: rows 0, 1, 4, 2 done, row 3 failed for good
    assert resume_line(run_dir) == ("resuming: 4 of 10 already done, 1 failed for good (they "
                                    "stay failed) by 2 earlier invocation(s); the rest run now")


def test_the_runner_can_say_it_from_the_history_it_already_read(tmp_path):
    run_dir = tmp_path / "run"
    resumed_ledger(run_dir)
    # read_history sees every invocation so far, as acquire_run does before a new run-start
    history = read_history(run_dir / "ledger.jsonl")
    assert resume_line_from_history(history, 10) == (
        "resuming: 5 of 10 already done, 1 failed for good (they stay failed) by 3 earlier "
        "invocation(s); the rest run now")


def test_a_first_invocation_says_nothing(tmp_path):
    run_dir = tmp_path / "run"
    ledger(run_dir, [record("run-start", None, rows_total=3), attempt(0, "ok")])
    assert resume_line(run_dir) is None
    assert resume_line(tmp_path / "missing") is None
    assert resume_line_from_history(read_history(tmp_path / "missing" / "ledger.jsonl"), 3) is None
