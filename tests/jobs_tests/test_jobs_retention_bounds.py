"""retention.keep_days is bounded at validation, and retention never overflows on a huge
value given to it directly."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from jobs import cli
from jobs.retention import apply_retention, expired_runs
from jobs.spec import Retention, SpecError, load_job_spec

SPEC = """\
name: nightly
manifest: m.parquet
model: kontext-tiny
output: out
retention:
  keep_days: {days}
"""


def write(tmp_path: Path, days: int) -> Path:
    (tmp_path / "m.parquet").write_bytes(b"not read by validation")
    path = tmp_path / "job.yaml"
    path.write_text(SPEC.format(days=days))
    return path


def test_keep_days_over_a_century_is_a_spec_error_with_its_line(tmp_path: Path,
                                                                 capsys) -> None:
    path = write(tmp_path, 10**9)
    with pytest.raises(SpecError) as info:
        load_job_spec(path, check_files=False)
    assert [str(p) for p in info.value.problems] == [
        f"{path}:6: retention.keep_days: must be between 1 and 36500, got 1000000000"]
    assert cli.main(["job", "validate", str(path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_keep_days_of_a_century_is_accepted(tmp_path: Path) -> None:
    assert load_job_spec(write(tmp_path, 36500), check_files=False).retention.keep_days == 36500


def make_runs(runs_dir: Path, days: list[str]) -> None:
    for day in days:
        folder = runs_dir / f"nightly-{day}"
        folder.mkdir(parents=True)
        (folder / "ledger.jsonl").write_text("{}\n")


@pytest.mark.parametrize("keep_days", [740_000, 10**9, 10**30])
def test_a_huge_keep_days_keeps_every_run_instead_of_overflowing(tmp_path: Path,
                                                                 keep_days: int) -> None:
    runs_dir = tmp_path / "runs"
    make_runs(runs_dir, ["0001-01-01", "2020-01-01", "2026-11-26", "2026-11-27"])
    rule = Retention(keep_days=keep_days)
    runs = [(date.fromisoformat(p.name[len("nightly-"):]), p)
            for p in sorted(runs_dir.iterdir())]
    assert expired_runs(runs, date(2026, 11, 27), rule) == []
    assert apply_retention(runs_dir, "nightly", date(2026, 11, 27), rule,
                           today=date(2026, 11, 27)) == []
    assert len(list(runs_dir.iterdir())) == 4


def test_keep_days_still_deletes_older_dates(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    make_runs(runs_dir, ["2026-11-20", "2026-11-25", "2026-11-27"])
    deleted = apply_retention(runs_dir, "nightly", date(2026, 11, 27), Retention(keep_days=3),
                              today=date(2026, 11, 27))
    assert [p.name for p in deleted] == ["nightly-2026-11-20"]
