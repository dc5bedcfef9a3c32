"""What run_job decides around a nightly run: retention after every finished run, the budget
priced by the run's frozen prices, future dates refused, a lost report rebuilt, lock-only
folders, image folders.

Most tests replace the pipeline run (``jobs.runner._run``) by a stub that writes the ledger
a real run would end with, so run_job's own decisions are tested without Ray."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import ledger_records
import pytest

import jobs.runner as runner
from jobs.runner import run_job
from jobs.spec import JobSpec, Retention
from pipeline.runner import RunSummary

DATE = "2026-11-27"
OLDER = ["2026-11-24", "2026-11-25", "2026-11-26"]


def make_spec(tmp_path: Path, retention: Retention, **extra: Any) -> JobSpec:
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"")  # never read: the pipeline run is stubbed
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text("name: nightly\n")
    return JobSpec(path=spec_file, name="nightly", model="tiny", output=tmp_path / "out",
                   manifest=manifest, retention=retention, **extra)


def make_finished_runs(spec: JobSpec, days: list[str]) -> list[Path]:
    folders = []
    for day in days:
        folder = spec.run_dir(day)
        folder.mkdir(parents=True)
        write_ledger(folder, "complete")
        folders.append(folder)
    return folders


def write_ledger(run_dir: Path, status: str | None) -> None:
    records = [ledger_records.run_start(1.0, run_id=None)]
    if status is not None:
        records.append(ledger_records.run_end(2.0, status, run_id=None))
    ledger_records.write_ledger(run_dir / "ledger.jsonl", records, append=True)


def stub_run(monkeypatch, status: str, exit_code: int) -> list[dict[str, Any]]:
    """Replace the pipeline run by one ending with ``status``; returns its calls."""
    calls: list[dict[str, Any]] = []

    def fake_run(spec, run_id, run_dir, *args, **kwargs) -> RunSummary:
        calls.append({"run_id": run_id, "run_dir": run_dir})
        write_ledger(run_dir, status)
        return RunSummary(run_id=run_id, run_dir=run_dir, store="", results=None,
                          status=status, counts={"done": 3, "failed": 1}, exit_code=exit_code)

    monkeypatch.setattr(runner, "_run", fake_run)
    return calls


# ----------------------------------------------------------------------------- 1: retention


@pytest.mark.parametrize(("status", "exit_code"), [
    ("complete", 0), ("failed-rows", 1), ("budget-stopped", 3)])
def test_retention_runs_after_every_finished_run(tmp_path: Path, monkeypatch, status: str,
                                                 exit_code: int) -> None:
    spec = make_spec(tmp_path, Retention(keep_runs=2))
    older = make_finished_runs(spec, OLDER)
    stub_run(monkeypatch, status, exit_code)
    result = run_job(spec, DATE, progress=False, reports=False)
    assert (result.status, result.exit_code) == (status, exit_code)
    # keep_runs: 2 keeps this run and the newest older one.
    assert result.deleted == older[:2]
    assert [p.exists() for p in older] == [False, False, True]


def test_no_retention_after_an_interrupted_or_crashed_run(tmp_path: Path,
                                                          monkeypatch) -> None:
    spec = make_spec(tmp_path, Retention(keep_runs=1))
    older = make_finished_runs(spec, OLDER)
    stub_run(monkeypatch, "interrupted", 1)
    result = run_job(spec, DATE, progress=False, reports=False)
    assert result.status == "interrupted" and result.deleted == []

    def crash(*args: Any, **kwargs: Any) -> RunSummary:
        raise RuntimeError("driver bug")

    monkeypatch.setattr(runner, "_run", crash)
    with pytest.raises(RuntimeError, match="driver bug"):
        run_job(spec, DATE, progress=False, reports=False)
    assert all(p.is_dir() for p in older)


# ----------------------------------------------------------------------------- 2: frozen prices


def capture_budget(monkeypatch) -> list[Any]:
    """Replace the pipeline's run_batch by one that keeps the budget it was given."""
    import pipeline.runner

    budgets: list[Any] = []

    def fake_run_batch(config, *, editor_factory=None, faults=(), budget=None) -> RunSummary:
        budgets.append(budget)
        run_dir = Path(config.out) / "runs" / config.run_id
        return RunSummary(run_id=config.run_id, run_dir=run_dir, store="", results=None,
                          status="interrupted", counts={}, exit_code=130)

    monkeypatch.setattr(pipeline.runner, "run_batch", fake_run_batch)
    return budgets


def test_a_resumed_budget_is_priced_with_the_prices_frozen_by_the_first_invocation(
        tmp_path: Path, monkeypatch) -> None:
    from jobs.spec import Budget
    from pipeline.reports.pricing import load_pricing, resolve_run_pricing

    frozen = load_pricing().to_dict()
    frozen["device_hour"]["H100"] = 2.0
    edited = {**frozen, "device_hour": {**frozen["device_hour"], "H100": 8.0}}
    (tmp_path / "prices.yaml").write_text(json.dumps(edited))  # edited after the first night
    spec = make_spec(tmp_path, Retention(), pricing=tmp_path / "prices.yaml",
                     budget=Budget(amount=5.0, currency="USD"))
    run_dir = spec.run_dir(DATE)
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"run_id": spec.run_id(DATE),
                                                     "pricing": frozen}))
    # The first invocation held one H100 for an hour, then was interrupted.
    ledger_records.write_ledger(run_dir / "ledger.jsonl", [
        ledger_records.run_start(0.0, run_id=None),
        ledger_records.actor_load(60.0, "a1", 0.0, 60.0, device_type="H100", run_id=None),
        ledger_records.actor_stop(3600.0, "a1", 3600.0, run_id=None),
        ledger_records.run_end(3600.0, "interrupted", run_id=None)])
    budgets = capture_budget(monkeypatch)

    assert run_job(spec, DATE, progress=False, reports=False).action == "resumed"
    (budget,) = budgets
    report_price = resolve_run_pricing(run_dir).price_per_hour("H100")
    assert report_price == 2.0
    assert budget.pricing.price_per_hour("H100") == report_price
    assert budget.spent(4000.0) == pytest.approx(2.0)  # as the report: 1 h x 2.0, not 8.0
    assert budget.may_dispatch(1)

    # A new date has nothing frozen yet: the spec's pricing file prices it.
    budgets = capture_budget(monkeypatch)
    run_job(spec, "2026-11-26", progress=False, reports=False)
    assert budgets[0].pricing.price_per_hour("H100") == 8.0


# ----------------------------------------------------------------------------- 3: future dates


def test_a_date_after_tomorrow_is_refused_before_any_work(tmp_path: Path, monkeypatch,
                                                          capsys) -> None:
    from pipeline_helpers import TEST_MODEL

    from jobs import cli
    from jobs.runner import FutureDateError, JobError, today_for

    spec = make_spec(tmp_path, Retention(keep_days=30))
    older = make_finished_runs(spec, OLDER)
    calls = stub_run(monkeypatch, "complete", 0)
    today = date.fromisoformat(today_for(spec))
    after_tomorrow = (today + timedelta(days=2)).isoformat()
    with pytest.raises(FutureDateError, match=rf"date {after_tomorrow} is in the future "
                                              rf"\(today is {today.isoformat()}\)"):
        run_job(spec, after_tomorrow, progress=False, reports=False)
    assert issubclass(FutureDateError, JobError)  # the CLI's config class: exit 2
    assert calls == [] and not spec.run_dir(after_tomorrow).exists()
    assert all(p.is_dir() for p in older)

    tomorrow = (today + timedelta(days=1)).isoformat()
    assert run_job(spec, tomorrow, progress=False, reports=False).status == "complete"
    assert [c["run_id"] for c in calls] == [f"nightly-{tomorrow}"]

    # The CLI: exit 2 with the reason, nothing written.
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "m.parquet").write_bytes(b"")
    spec_file = tmp_path / "cli" / "job.yaml"
    spec_file.write_text(f"name: typo\nmanifest: m.parquet\nmodel: {TEST_MODEL}\n"
                         "output: out\nretention:\n  keep_days: 30\n")
    assert cli.main(["job", "run", str(spec_file), "--date", "2062-11-27", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "date 2062-11-27 is in the future" in err and "check --date for a typo" in err
    assert not (tmp_path / "cli" / "out" / "runs").exists()


def test_retention_measures_age_from_today_when_the_run_is_dated_later() -> None:
    from jobs.retention import expired_runs

    days = ["2026-09-01", "2026-10-25", "2026-11-20", "2026-11-27"]
    runs = [(date.fromisoformat(d), Path(f"/runs/nightly-{d}")) for d in days]
    today = date(2026, 11, 28)

    def names(current: date) -> list[str]:
        return [p.name for p in expired_runs(runs, current, Retention(keep_days=30), today)]

    # A mistyped 2062 ages the runs from today: only those 30 days or more before it go.
    assert names(date(2062, 11, 27)) == ["nightly-2026-09-01", "nightly-2026-10-25"]
    # A back-fill still measures from its own date (26 days before it: kept).
    assert names(date(2026, 11, 20)) == ["nightly-2026-09-01"]
    # Without today, the run's date rules, as before.
    assert [p.name for p in expired_runs(runs, date(2062, 11, 27), Retention(keep_days=30))] \
        == [f"nightly-{d}" for d in days]


# ----------------------------------------------------------------------------- 4: lost report


@pytest.fixture(scope="module")
def ray_cluster():
    import ray
    from pipeline_helpers import start_ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()


def test_a_finished_date_without_a_report_gets_it_rebuilt_when_triggered_again(
        tmp_path: Path, ray_cluster, capsys) -> None:
    from test_jobs_run import make_job

    from jobs.spec import load_job_spec

    spec = load_job_spec(make_job(tmp_path, products=2, variants=1))
    # A run whose driver died after run-end, before the reports: no report.json.
    first = run_job(spec, DATE, progress=False, reports=False, retry_backoff_s=0.05)
    assert (first.status, first.counts["done"]) == ("complete", 2)
    report = first.run_dir / "report.json"
    assert not report.exists()
    ledger_bytes = (first.run_dir / "ledger.jsonl").read_bytes()

    no_report = run_job(spec, DATE, progress=False, reports=False)  # --no-report: left alone
    assert no_report.action == "nothing-to-do" and no_report.reports_rebuilt == {}
    assert not report.exists()

    again = run_job(spec, DATE, progress=False)
    assert (again.action, again.status, again.exit_code) == ("nothing-to-do", "complete", 0)
    assert again.reports_rebuilt["json"] == str(report) and again.report_error is None
    doc = json.loads(report.read_text())
    assert doc["figures"]["run"]["status"] == "complete"
    assert doc["figures"]["rows"]["done"] == 2
    assert (first.run_dir / "report.html").is_file()
    assert f"rebuilt {report}" in capsys.readouterr().err
    assert (first.run_dir / "ledger.jsonl").read_bytes() == ledger_bytes  # nothing ran

    report_bytes = report.read_bytes()
    third = run_job(spec, DATE, progress=False)  # the report exists: left as it is
    assert third.reports_rebuilt == {} and report.read_bytes() == report_bytes


# ----------------------------------------------------------------------------- 5: lock-only


def test_folders_without_a_run_do_not_count_against_keep_runs(tmp_path: Path) -> None:
    from jobs.lock import RunLock
    from jobs.retention import apply_retention

    runs = tmp_path / "runs"
    with_ledger = ["2026-11-20", "2026-11-24", "2026-11-26"]
    lock_only = ["2026-11-21", "2026-11-22", "2026-11-25"]  # nights refused on their config
    for day in with_ledger + lock_only:
        folder = runs / f"nightly-{day}"
        folder.mkdir(parents=True)
        (folder / "job.lock").touch()
        if day in with_ledger:
            (folder / "ledger.jsonl").write_text("")
    held = RunLock(runs / "nightly-2026-11-21")  # a trigger of that date running right now
    assert held.acquire()
    try:
        deleted = apply_retention(runs, "nightly", date(2026, 11, 27), Retention(keep_runs=3),
                                  today=date(2026, 11, 28))
    finally:
        held.release()
    # Kept by count: the current run and the two newest real runs (11-26, 11-24); the
    # lock-only 11-25 lies between kept runs; 11-21 is locked; 11-20 and 11-22 go.
    assert [p.name for p in deleted] == ["nightly-2026-11-20", "nightly-2026-11-22"]
    assert sorted(p.name for p in runs.iterdir()) == [
        "nightly-2026-11-21", "nightly-2026-11-24", "nightly-2026-11-25", "nightly-2026-11-26"]

    # keep_runs: 1 keeps no older run, so no older lock-only folder either.
    deleted = apply_retention(runs, "nightly", date(2026, 11, 27), Retention(keep_runs=1),
                              today=date(2026, 11, 28))
    assert sorted(p.name for p in deleted) == [
        "nightly-2026-11-21", "nightly-2026-11-24", "nightly-2026-11-25", "nightly-2026-11-26"]


# ----------------------------------------------------------------------------- 6: image folders


def test_image_folders_resolves_each_folder_once_and_follows_linked_files(
        tmp_path: Path, monkeypatch) -> None:
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq

    from jobs.runner import image_folders

    photos, more, targets = tmp_path / "photos", tmp_path / "more", tmp_path / "targets"
    for folder in (photos, more, targets):
        folder.mkdir()
    (tmp_path / "linked-folder").symlink_to(more)  # a folder reached through a link
    (targets / "t.png").write_bytes(b"x")
    (photos / "link.png").symlink_to(targets / "t.png")  # a file that is a link elsewhere
    run = tmp_path / "run"
    run.mkdir()
    refs = [str(photos / f"p{i % 10}.png") for i in range(600)]  # 10 images, 60 rows each
    refs += [str(tmp_path / "linked-folder" / f"m{i % 5}.png") for i in range(300)]
    refs += [str(photos / "link.png"), str(run / "own.png"), "s3://bucket/a.png", "rel.png",
             None]
    manifest = run / "manifest.parquet"
    pq.write_table(pa.table({"image": refs}), manifest)

    calls = []
    realpath = os.path.realpath
    monkeypatch.setattr(os.path, "realpath", lambda p: calls.append(p) or realpath(p))
    assert image_folders(manifest) == sorted([str(more), str(photos), str(targets)])
    # The run folder, three image folders and the one linked file: not one per row.
    assert len(calls) == 5, calls
