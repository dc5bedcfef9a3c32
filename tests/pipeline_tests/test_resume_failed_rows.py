"""A resumed run ends as an uninterrupted one would: rows an earlier invocation failed for
good stay failed (not run again), and tries already spent count against --max-attempts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pipeline_helpers import make_manifest, read_records
from test_pipeline_plan import plan

from pipeline.ledger import LedgerWriter
from pipeline.resume import read_history


def _attempt(ledger: LedgerWriter, task, attempt: int, outcome: str, error: str,
             key: str | None = "task") -> None:
    ledger.write("attempt", row_index=task.row_index, row_id=task.row_id,
                 key=task.key if key == "task" else key, attempt=attempt, outcome=outcome,
                 error_class="transient", error=error, actor="actor-0")


def test_rows_failed_for_good_stay_failed_when_the_run_resumes(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    first, _, run_dir = plan(tmp_path, manifest, run_id="run-r")
    failed, retrying, changed = first.tasks[0], first.tasks[1], first.tasks[2]
    with LedgerWriter(run_dir / "ledger.jsonl", "run-r") as ledger:
        for n in (1, 2):
            _attempt(ledger, failed, n, "retry-scheduled", "S3 503")
        _attempt(ledger, failed, 3, "failed-permanent", "S3 503, three times")
        _attempt(ledger, retrying, 1, "retry-scheduled", "S3 503")
        _attempt(ledger, changed, 1, "failed-permanent", "actor died")
    # the third row's instruction changes: a new key, so its old failure no longer applies
    frame = pd.read_parquet(manifest)
    frame.loc[changed.row_index, "instruction"] = "a new instruction"
    frame.to_parquet(manifest, index=False)

    second, outcomes, _ = plan(tmp_path, manifest, run_id="run-r")
    to_run = sorted(t.row_index for t in second.tasks)
    assert failed.row_index not in to_run
    assert retrying.row_index in to_run and changed.row_index in to_run
    assert outcomes.status[failed.row_index] == "failed"
    assert outcomes.reason[failed.row_index] == "S3 503, three times"
    assert outcomes.attempts[failed.row_index] == 3
    assert outcomes.error_class[failed.row_index] == "transient"
    assert second.failed == 1
    # nothing new is written for the carried row: its failure record is the earlier one
    records = [r for r in read_records(run_dir) if r.get("row_index") == failed.row_index]
    assert [r["outcome"] for r in records if r["type"] == "attempt"] == [
        "retry-scheduled", "retry-scheduled", "failed-permanent"]


def test_tries_spent_are_counted_without_planning_deferrals(tmp_path: Path) -> None:
    manifest = make_manifest(tmp_path / "m", products=1, variants=2)
    first, _, run_dir = plan(tmp_path, manifest, run_id="run-s")
    task = first.tasks[0]
    with LedgerWriter(run_dir / "ledger.jsonl", "run-s") as ledger:
        # a source unreadable while planning (no key yet), then a failed dispatch try
        _attempt(ledger, task, 1, "retry-scheduled", "EIO while planning", key=None)
        _attempt(ledger, task, 2, "retry-scheduled", "S3 503")
    row = read_history(run_dir / "ledger.jsonl").rows[task.row_index]
    assert (row.attempts, row.dispatched) == (2, 1)
