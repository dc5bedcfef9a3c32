"""Crash safety: the driver is SIGKILLed at every named kill point of a run, and the same
command runs again. Whatever the moment, nothing is lost or doubled:

- the killed driver really died of SIGKILL at that point (exit status -9);
- what is on disk right after the kill is consistent: every stored output matches its
  sidecar's sha256, no key has two ``ok`` records, the strict ledger reader accepts the ledger;
- after the rerun every manifest row is done, a cache hit, or failed with a reason; results
  has one row per manifest row; each key has exactly one ``ok`` record (a commit whose ledger
  line was lost is recovered, never recomputed).

Drivers are the real CLI (``kontext-batch run``) in processes forked from a preloaded server,
killed by ``KONTEXT_TEST_KILL_AT=<point>:<n>`` (pipeline.killpoints); they join one shared
Ray cluster, so an iteration costs no interpreter or Ray start-up.

``make test`` runs the chained loop: one run directory, each invocation resuming what the
previous killed one left and dying at the next point (26 kill points, ~2 minutes). The soak
(``KONTEXT_SOAK=1``) runs every point from a clean state, with several counts each.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from hardening_helpers import (
    ForkedDrivers,
    SharedCluster,
    attempts,
    check_run,
    check_store,
    cli_argv,
    cli_env,
    results_rows,
    run_dirs,
)
from pipeline_helpers import make_manifest, read_records, rewrite_manifest

from pipeline.killpoints import POINTS

SOAK = os.environ.get("KONTEXT_SOAK") == "1"

# The chain: (point, n) in run order. Each invocation resumes the run the previous one left
# and dies the n-th time it passes the point; the manifest (32 good rows in batches of 2,
# one bad row) leaves work for every dispatch point. The last two points end the run, so
# the final invocations are new runs made of cache hits.
CHAIN = [
    ("after-config", 1),
    ("after-run-start", 1),
    ("ledger-mid-write", 1),      # the run-start record is torn
    ("after-plan", 1),
    ("ledger-mid-write", 2),      # the plan's records are torn
    ("before-dispatch", 1),
    ("after-actor-start", 1),
    ("after-submit", 1),
    ("result-received", 1),
    ("store-tmp-written", 1),     # a sidecar's temp file
    ("store-tmp-written", 2),     # an output's temp file
    ("after-sidecar", 1),
    ("after-store-commit", 1),    # committed, no ledger line: recovered by the next one
    ("after-ledger-append", 1),
    ("ledger-mid-write", 4),      # a batch's ok records are torn
    ("after-store-commit", 3),
    ("after-submit", 3),
    ("result-received", 2),
    ("after-sidecar", 4),
    ("after-ledger-append", 2),
    ("before-stop-actors", 1),    # every row settled, actors up
    ("results-tmp-written", 1),
    ("after-results", 1),
    ("after-run-end", 1),
    ("report-write", 1),          # in the next run (cache hits), while writing its report
]
GOOD_ROWS = 32
ROWS = GOOD_ROWS + 1
BAD_ROW = 3  # its image does not exist


def _manifest(folder: Path) -> Path:
    manifest = make_manifest(folder, products=GOOD_ROWS // 2, variants=2)
    frame = pd.read_parquet(manifest)
    bad = frame.iloc[[0]].copy()
    bad["image"], bad["row_id"] = "images/missing.png", "bad-missing"
    frame = pd.concat([frame.iloc[:BAD_ROW], bad, frame.iloc[BAD_ROW:]], ignore_index=True)
    frame.to_parquet(manifest, index=False)
    assert len(frame) == ROWS
    return manifest


@pytest.fixture(scope="module")
def manifest_template(tmp_path_factory) -> Path:
    return _manifest(tmp_path_factory.mktemp("crash-manifest"))


def _copy_manifest(template: Path, folder: Path) -> Path:
    shutil.copytree(template.parent, folder)
    return folder / template.name


def _drive(drivers: ForkedDrivers, cluster: SharedCluster, manifest: Path, out: Path,
           kill_at: str | None, *more: str) -> int:
    env = cli_env(**({"KONTEXT_TEST_KILL_AT": kill_at} if kill_at else {}))
    log = out.parent / "driver.log"
    with open(log, "a") as f:
        f.write(f"\n=== kill at {kill_at}\n")
    return drivers.run(cli_argv(manifest, out, cluster.address, *more), env, log)


def _on_disk_problems(out: Path) -> list[str]:
    """What must hold right after a kill, before anything repairs it."""
    problems = check_store(out)
    from pipeline.reports.ledger import load_ledger as strict_read

    for run_dir in run_dirs(out):
        if not (run_dir / "ledger.jsonl").exists():
            continue
        try:
            strict_read(run_dir)  # a torn last line is allowed, damage elsewhere is not
        except Exception as exc:
            problems.append(f"{run_dir.name}: {exc}")
        keys = [a["key"] for a in attempts(run_dir) if a["outcome"] == "ok"]
        if len(keys) != len(set(keys)):
            problems.append(f"{run_dir.name}: a key has two ok records")
    return problems


def test_kill_point_tables_cover_every_point() -> None:
    assert len(CHAIN) >= 20
    assert {p for p, _ in CHAIN} == set(POINTS)
    assert {p for p, _ in SOAK_POINTS} == set(POINTS)


def test_chained_driver_kills_then_rerun_lose_nothing(cluster, drivers, manifest_template,
                                                      tmp_path: Path) -> None:
    manifest = _copy_manifest(manifest_template, tmp_path / "m")
    out = tmp_path / "out"
    for point, n in CHAIN:
        more = () if point == "report-write" else ("--no-report",)
        code = _drive(drivers, cluster, manifest, out, f"{point}:{n}", *more)
        assert code == -signal.SIGKILL, (
            f"the driver did not die at {point}:{n} (exit {code}); log:\n"
            f"{(tmp_path / 'driver.log').read_text()[-3000:]}")
        assert _on_disk_problems(out) == [], f"after the kill at {point}:{n}"

    code = _drive(drivers, cluster, manifest, out, None, "--no-report")
    assert code == 1  # the bad row fails, every other row is done or a cache hit
    first, *later = sorted(run_dirs(out), key=lambda d: len(d.name))
    assert [d.name for d in later] == [f"{first.name}-2", f"{first.name}-3"]
    for run_dir in (first, *later):
        assert check_run(run_dir, ROWS) == [], run_dir.name
    assert check_store(out) == []
    rows = results_rows(first)
    assert rows[BAD_ROW]["status"] == "failed" and "not found" in rows[BAD_ROW]["reason"]
    assert {r["status"] for i, r in enumerate(rows) if i != BAD_ROW} == {"done"}
    records = read_records(first)
    oks = [r for r in records if r["type"] == "attempt" and r["outcome"] == "ok"]
    assert len(oks) == len({r["key"] for r in oks}) == GOOD_ROWS
    assert any(r.get("recovered") for r in oks)  # a commit whose ledger line was lost
    invocations = [r for r in records if r["type"] == "run-start"]
    assert len(invocations) >= len(CHAIN) - 4  # two torn run-starts were cut, two ran later
    for run_dir in later:  # the runs after the end are made of cache hits only
        statuses = [r["status"] for r in results_rows(run_dir)]
        assert statuses.count("cache-hit") == GOOD_ROWS and statuses.count("failed") == 1


SOAK_POINTS = [(p, n) for p in POINTS for n in (1, 2, 3)
               if not (n > 1 and p in ("after-config", "after-run-start", "after-plan",
                                       "before-dispatch", "after-actor-start",
                                       "before-stop-actors", "results-tmp-written",
                                       "after-results", "after-run-end", "report-write"))]


@pytest.mark.skipif(not SOAK, reason="soak: set KONTEXT_SOAK=1 (every kill point from a "
                                     "clean state; ~10 minutes)")
@pytest.mark.parametrize("point,n", SOAK_POINTS, ids=[f"{p}:{n}" for p, n in SOAK_POINTS])
def test_soak_driver_sigkill_at_point_then_rerun_loses_nothing(
        point: str, n: int, cluster, drivers, tmp_path: Path) -> None:
    manifest = _manifest(tmp_path / "m")  # 33 rows: fresh, so every count is reachable
    out = tmp_path / "out"
    more = () if point == "report-write" else ("--no-report",)
    code = _drive(drivers, cluster, manifest, out, f"{point}:{n}", *more)
    assert code == -signal.SIGKILL, (tmp_path / "driver.log").read_text()[-3000:]
    assert _on_disk_problems(out) == []
    code = _drive(drivers, cluster, manifest, out, None, "--no-report")
    assert code == 1
    for run_dir in run_dirs(out):
        assert check_run(run_dir, ROWS) == [], run_dir.name
    assert check_store(out) == []
    oks = [r for d in run_dirs(out) for r in read_records(d)
           if r["type"] == "attempt" and r["outcome"] == "ok"]
    assert len(oks) == len({r["key"] for r in oks}) == GOOD_ROWS


def test_manifest_changed_between_kill_and_rerun_starts_a_new_run(
        cluster, drivers, manifest_template: Path, tmp_path: Path) -> None:
    """Killed mid-run, then the manifest changes: the rerun is a different run (new id) and
    takes what the killed run committed as cache hits, never as its own work."""
    manifest = _copy_manifest(manifest_template, tmp_path / "m")
    out = tmp_path / "out"
    code = _drive(drivers, cluster, manifest, out, "after-ledger-append:2", "--no-report")
    assert code == -signal.SIGKILL
    first_dir = run_dirs(out)[0]
    committed = {r["key"] for r in attempts(first_dir) if r["outcome"] == "ok"}
    assert len(committed) == 4
    # Another seed, not another instruction: the manifest (and row 6's key) change, but every
    # instruction's embedding is stored already, so the rerun starts no text encoder.
    rewrite_manifest(manifest, seed={6: 4242})
    assert _drive(drivers, cluster, manifest, out, None, "--no-report") == 1
    (second_dir,) = [d for d in run_dirs(out) if d != first_dir]
    rows = pq.read_table(second_dir / "results.parquet").to_pylist()
    hits = {r["key"] for r in rows if r["status"] == "cache-hit"}
    assert hits == committed & {r["key"] for r in rows}
    assert not hits & {r["key"] for r in attempts(second_dir) if r["outcome"] == "ok"}
    assert check_run(second_dir, ROWS) == [] and check_store(out) == []
