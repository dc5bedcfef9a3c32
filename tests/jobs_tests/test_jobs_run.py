"""Job runs on Ray with the tiny-random model: one run per date, resume after a kill, budget
stop, retention after a finished run, history. The first test runs the CLI in subprocesses
(their own local Ray); the others share one in-process Ray cluster."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_helpers import (
    RAY_AUTH_ENV,
    REPO,
    TEST_MODEL,
    ok_counts,
    ray_cluster_fixture,
    read_records,
    short_tmp,
    wait_for,
)

from jobs import cli
from jobs.history import job_history
from jobs.lock import RunLock
from jobs.runner import JobBusy, run_job
from jobs.spec import load_job_spec
from pipeline.reports import build_report
from pipeline.reports.pricing import load_pricing

DATE = "2026-11-27"


def make_catalog(folder: Path, products: int) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(products):
        pid = f"p{i:02d}"
        Image.new("RGB", (32, 32), ((i * 53) % 256, 120, (i * 97) % 256)).save(
            folder / "images" / f"{pid}.png")
        rows.append({"product_id": pid, "image": f"images/{pid}.png", "product": "box"})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)
    return folder / "catalog.csv"


def make_job(folder: Path, products: int, variants: int = 2, extra: str = "",
             batch_size: int = 2) -> Path:
    """A job over ``products`` x ``variants`` rows with tiny-random on one CPU actor."""
    make_catalog(folder / "catalog", products)
    colours = ["red", "blue", "green", "yellow", "pink", "grey"]
    (folder / "variants.yaml").write_text("variants:\n" + "".join(
        f"  - name: {c}\n    instruction: put the {{product}} on a {c} background\n"
        for c in colours[:variants]))
    spec = folder / "job.yaml"
    spec.write_text(textwrap.dedent(f"""
        name: test-nightly
        build:
          catalog: catalog/catalog.csv
          variants: variants.yaml
        model: {TEST_MODEL}
        sampler:
          batch_size: {batch_size}
        output: out
        ray:
          actors: 1
          device: cpu
        """).lstrip("\n") + textwrap.dedent(extra))
    return spec


def results(run_dir: Path) -> list[dict]:
    return pq.read_table(run_dir / "results.parquet").to_pylist()


def sleep_faults(run_ids: list[str], marker_dir: Path, seconds: float) -> list[dict]:
    return [{"kind": "sleep", "row_id": rid, "seconds": seconds, "marker_dir": str(marker_dir)}
            for rid in run_ids]


def row_ids(products: int, variants: int) -> list[str]:
    colours = ["red", "blue", "green", "yellow", "pink", "grey"][:variants]
    return [f"p{i:02d}--{c}--0" for i in range(products) for c in colours]


# ----------------------------------------------------------------------------- subprocesses


def job_cli(spec: Path, faults: list[dict] | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_TMPDIR": short_tmp("kbjob")}
    for name in ("KONTEXT_BATCH_FAULTS", *RAY_AUTH_ENV):  # the job's local Ray gets a token
        env.pop(name, None)
    if faults:
        env["KONTEXT_BATCH_FAULTS"] = json.dumps(faults)
    cmd = [sys.executable, "-m", "jobs.cli", "job", "run", str(spec), "--date", DATE,
           "--quiet", "--no-report"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)




def test_killed_date_resumes_and_a_finished_date_runs_nothing(tmp_path: Path) -> None:
    spec = make_job(tmp_path, products=8, variants=2)  # 16 rows
    run_dir = load_job_spec(spec).run_dir(DATE)
    ledger = run_dir / "ledger.jsonl"

    def ok_lines() -> int:
        if not ledger.exists():
            return 0
        return sum(b'"outcome":"ok"' in line for line in ledger.read_bytes().splitlines())

    first = job_cli(spec, sleep_faults(row_ids(8, 2), tmp_path / "faults", 0.3))
    try:
        wait_for(lambda: ok_lines() >= 4 or first.poll() is not None, 240, "4 committed rows")
        assert first.poll() is None, first.stdout.read().decode()[-3000:]
        os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
    finally:
        first.wait(timeout=60)
    assert not [r for r in read_records(run_dir) if r["type"] == "run-end"]
    done_before = sum(ok_counts(run_dir).values())
    assert 4 <= done_before < 16
    manifest_bytes = (run_dir / "manifest.parquet").read_bytes()

    second = job_cli(spec)
    log = second.communicate(timeout=300)[0].decode()
    assert second.returncode == 0, log[-3000:]
    assert f"job test-nightly {DATE}: resumed as test-nightly-{DATE}" in log
    assert [p.name for p in (run_dir.parent).iterdir()] == [run_dir.name]
    assert (run_dir / "manifest.parquet").read_bytes() == manifest_bytes  # frozen per date
    rows = results(run_dir)
    assert len(rows) == 16 and {r["status"] for r in rows} == {"done"}
    oks = ok_counts(run_dir)
    assert set(oks) == {r["key"] for r in rows} and set(oks.values()) == {1}  # each key once
    for row in rows:
        assert Path(row["output_uri"]).is_file()
    records = read_records(run_dir)
    assert sum(r["type"] == "run-start" for r in records) == 2
    assert [r["status"] for r in records if r["type"] == "run-end"] == ["complete"]
    triggers = json.loads((run_dir / "job.json").read_text())["triggers"]
    assert [t["action"] for t in triggers] == ["ran", "resumed"]

    ledger_bytes = ledger.read_bytes()
    third = job_cli(spec)
    log = third.communicate(timeout=120)[0].decode()
    assert third.returncode == 0, log[-3000:]
    assert f"job test-nightly {DATE}: already finished (complete; 16 done); nothing to do" in log
    assert ledger.read_bytes() == ledger_bytes  # nothing ran, nothing was appended


# ----------------------------------------------------------------------------- in-process


ray_cluster = ray_cluster_fixture()


def test_budget_cap_stops_dispatch_finishes_in_flight_and_exits_3(tmp_path: Path, ray_cluster,
                                                                  monkeypatch, capsys) -> None:
    prices = load_pricing().to_dict()
    prices["device_hour"]["CPU"] = 3600.0  # 1 USD per actor-second
    (tmp_path / "prices.yaml").write_text(json.dumps(prices))
    # 36 rows that sleep 0.4 s each: the whole run would cost more than 14.4 USD, so a cap
    # of 12 USD must stop it; a model load of under ~10 s leaves room for the first batches.
    spec_path = make_job(tmp_path, products=18, variants=2, extra="""
        pricing: prices.yaml
        budget:
          amount: 12
          currency: USD
        retention:
          keep_runs: 1
        """)
    monkeypatch.setenv("KONTEXT_BATCH_FAULTS", json.dumps(
        sleep_faults(row_ids(18, 2), tmp_path / "faults", 0.4)))
    code = cli.main(["job", "run", str(spec_path), "--date", DATE, "--quiet", "--no-report"])
    out = capsys.readouterr().out
    assert code == 3, out
    run_dir = load_job_spec(spec_path).run_dir(DATE)
    assert "budget-stopped" in out and "budget:   stopped at the cap" in out

    rows = results(run_dir)
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("done", "not-run")}
    assert len(by_status["done"]) + len(by_status["not-run"]) == 36
    assert by_status["done"] and by_status["not-run"]
    assert {(r["reason"], r["error_class"]) for r in by_status["not-run"]} == \
        {("budget cap reached", "budget")}
    records = read_records(run_dir)
    attempted = {r["row_id"] for r in records if r["type"] == "attempt"}
    # Nothing in flight is lost: every row that reached an actor ended done and committed once.
    assert attempted == {r["row_id"] for r in by_status["done"]}
    oks = ok_counts(run_dir)
    assert set(oks.values()) == {1} and set(oks) == {r["key"] for r in by_status["done"]}
    assert all(Path(r["output_uri"]).is_file() for r in by_status["done"])
    (stop,) = [r for r in records if r["type"] == "budget-stop"]
    assert stop["cap"] == 12.0 and stop["currency"] == "USD" and stop["spent"] > 0
    assert stop["rows_not_dispatched"] == len(by_status["not-run"])
    assert [r["status"] for r in records if r["type"] == "run-end"] == ["budget-stopped"]

    # The report (priced by the frozen test pricing) states the stop and agrees on the price.
    config = json.loads((run_dir / "config.json").read_text())
    assert config["pricing"]["device_hour"]["CPU"] == 3600.0
    figures = build_report(run_dir)["figures"]
    assert figures["run"]["status"] == "budget-stopped"
    assert figures["budget"] == {k: stop[k] for k in ("spent", "cap", "currency",
                                                       "rows_not_dispatched")}
    assert figures["rows"]["done"] == len(by_status["done"])
    with capsys.disabled():  # for the person reading the test log (no assertion on timing)
        print(f"\nbudget stop: cap 12 USD, spent {stop['spent']:.2f} at the stop, "
              f"{figures['cost']['total']:.2f} in the report after in-flight rows finished; "
              f"{len(by_status['done'])} rows done, {len(by_status['not-run'])} not run")

    # The date is finished: triggering it again runs nothing.
    monkeypatch.delenv("KONTEXT_BATCH_FAULTS")
    assert cli.main(["job", "run", str(spec_path), "--date", DATE, "--quiet"]) == 0
    assert "already finished (budget-stopped" in capsys.readouterr().out
    assert read_records(run_dir) == records


def test_retention_keeps_store_objects_and_history_lists_each_date(tmp_path: Path, ray_cluster,
                                                                   capsys) -> None:
    spec_path = make_job(tmp_path, products=2, variants=2, extra="""
        retention:
          keep_runs: 2
        """)
    spec = load_job_spec(spec_path)
    quiet = dict(progress=False, reports=False, retry_backoff_s=0.05)
    first = run_job(spec, "2026-11-25", **quiet)
    assert (first.action, first.status, first.counts["done"]) == ("ran", "complete", 4)
    second = run_job(spec, "2026-11-26", **quiet)
    assert second.counts["cache-hit"] == 4 and second.summary.actors_started == 0
    assert second.deleted == []
    make_catalog(tmp_path / "catalog", products=3)  # a new product for the third night
    third = run_job(spec, "2026-11-27", **quiet)
    assert third.counts == {"done": 2, "cache-hit": 4, "failed": 0, "not-run": 0}
    assert third.deleted == [first.run_dir] and not first.run_dir.exists()
    # Only the run folder went: the kept runs' outputs (committed by the deleted run) remain.
    for run in (second, third):
        assert all(Path(r["output_uri"]).is_file() for r in results(run.run_dir))

    rows, totals = job_history(spec)
    assert [(r.date, r.status, r.images, r.hits, r.failed) for r in rows] == [
        ("2026-11-26", "complete", 0, 4, 0), ("2026-11-27", "complete", 2, 4, 0)]
    assert rows[0].cost == 0 and rows[1].cost > 0 and rows[1].currency == "USD"
    assert totals["rows"]["done"] == 2 and totals["cost"]["total"] == pytest.approx(rows[1].cost)

    assert cli.main(["job", "history", str(spec_path)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].split() == ["date", "status", "images", "hits", "failed", "not", "run",
                                "cost"]
    assert table[2].split()[:6] == ["2026-11-26", "complete", "0", "4", "0", "0"]
    assert table[3].split()[:6] == ["2026-11-27", "complete", "2", "4", "0", "0"]
    assert cli.main(["job", "history", str(spec_path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["date"] for r in doc["runs"]] == ["2026-11-26", "2026-11-27"]
    assert doc["totals"]["rows"]["cache_hits"] == 8


def test_demo_nightly_example_runs_on_kontext_tiny(tmp_path: Path, ray_cluster) -> None:
    spec = load_job_spec(REPO / "jobs/examples/demo-nightly.yaml", check_model=True)
    spec = dataclasses.replace(spec, output=tmp_path / "out")
    result = run_job(spec, DATE, progress=False, reports=False)
    assert (result.status, result.exit_code, result.counts["done"]) == ("complete", 0, 24)
    rows = results(result.run_dir)
    assert {r["variant"] for r in rows} == {"solid-blue", "yellow", "grey-backdrop", "pink"}
    mug = {r["variant"]: r["instruction"] for r in rows if r["product_id"] == "p02-mug"}
    assert mug["yellow"] == "put the mug on a yellow background"
    assert mug["solid-blue"] == "replace the background with solid blue"
    # The yellow variant really is yellow behind the product (the corner pixel).
    corner = Image.open(next(r["output_uri"] for r in rows if r["variant"] == "yellow"
                             and r["product_id"] == "p02-mug")).convert("RGB").getpixel((3, 3))
    assert corner[0] > 150 and corner[1] > 150 and corner[2] < 110, corner


def test_a_date_running_elsewhere_is_refused(tmp_path: Path, capsys) -> None:
    spec = load_job_spec(make_job(tmp_path, products=1))
    lock = RunLock(spec.run_dir(DATE))
    assert lock.acquire()
    try:
        with pytest.raises(JobBusy, match="already running in another process"):
            run_job(spec, DATE)
        assert cli.main(["job", "run", str(spec.path), "--date", DATE]) == 4
        assert "already running" in capsys.readouterr().err
    finally:
        lock.release()
    assert cli.main(["job", "run", str(spec.path), "--date", "2026-13-01"]) == 2
    assert "not a calendar date in the form YYYY-MM-DD" in capsys.readouterr().err
