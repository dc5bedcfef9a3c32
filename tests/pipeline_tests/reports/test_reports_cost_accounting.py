"""Report figures a team relies on, each pinned on a small hand-written ledger: failed model calls
cost device time, a resumed run's wall time and status, the marginal cache saving, what counts as
retried, recovered attempts, the lower-bound note, the budget-stop line, --verify with other
prices, and unknown outcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ledger_records import actor_load, actor_stop, attempt, budget_stop, phases, run_end, run_start
from ledger_records import write_run as write_priced_run
from synthetic_runs import make_synthetic_run

from jobs.budget import LedgerBudget
from pipeline.reports import build_report, generate_reports, rollup
from pipeline.reports.command import main as report_main
from pipeline.reports.pricing import pricing_from_mapping
from pipeline.reports.report_doc import analyse_run
from pipeline.reports.report_render import report_markdown

PER_SECOND = 0.01  # H100 at 36 USD per hour: every device-second costs one cent
PRICES = {
    "currency": "USD", "source": "test prices", "as_of": "2026-11-27",
    "device_hour": {"H100": 36.0, "H200": 3.79, "A100": 1.79, "L40S": 0.99, "CPU": 0.05},
    "hosted_api": {"source": "test", "as_of": "2026-11-27", "per_image": {"ref": 0.04}},
}
DAY = 86_400.0


def write_run(run_dir: Path, records: list[dict], pricing: dict | None = None) -> Path:
    return write_priced_run(run_dir, records, pricing or PRICES)


def budget_spent(run_dir: Path, now: float) -> float:
    meter = LedgerBudget(run_dir / "ledger.jsonl", 1e9, "USD", pricing_from_mapping(PRICES), clock=lambda: now)
    return meter.spent(now)


# 1. failed_model ------------------------------------------------------------------------------

def test_a_failed_model_call_is_device_busy_and_costed_as_failed_attempts(tmp_path):
    # Rows 0 and 1 share a batch whose model call ran out of memory after 8 s (4 s each).
    records = [run_start(0, 2), actor_load(61, "editor-0", 0, 60),
               attempt(69, 0, "retry-scheduled", "editor-0", 60, 68, phases(decode=0.1, failed_model=4.0),
                       error_class="transient"),
               attempt(69, 1, "retry-scheduled", "editor-0", 60, 68, phases(decode=0.1, failed_model=4.0),
                       error_class="transient"),
               attempt(79, 0, "ok", "editor-0", 69, 79, phases(denoise=10.0), attempt_no=2),
               attempt(89, 1, "ok", "editor-0", 79, 89, phases(denoise=10.0), attempt_no=2),
               actor_stop(90, "editor-0", 90), run_end(91, "complete")]
    report = build_report(write_run(tmp_path / "run", records))
    f = report["figures"]
    assert f["time"]["busy_by_phase"]["failed_model"] == pytest.approx(8.0)
    assert f["time"]["busy_seconds"] == pytest.approx(28.0)
    assert f["time"]["idle_seconds"] == pytest.approx(90 - 60 - 28)
    assert f["cost"]["failed_attempts_busy_seconds"] == pytest.approx(8.0)
    assert f["cost"]["failed_attempts"] == pytest.approx(8.0 * PER_SECOND)
    assert f["cost"]["failed_attempts_by_error_class"] == {"transient": pytest.approx(8.0 * PER_SECOND)}
    assert analyse_run(tmp_path / "run").rows["r0"].busy_seconds == pytest.approx(14.0)
    md = report_markdown(report)
    assert "of which failed attempts**: $0.0800 (8.0 s device-busy in 2 failed attempts)" in md


def test_a_ledger_without_failed_model_counts_it_zero(tmp_path):
    old = phases(decode=0.1)
    del old["read"], old["failed_model"]  # ledgers written before failed_model existed lack keys; none may be required
    records = [run_start(0, 1), actor_load(61, "editor-0", 0, 60),
               attempt(69, 0, "retry-scheduled", "editor-0", 60, 68, old, error_class="transient"),
               attempt(79, 0, "ok", "editor-0", 69, 79, {"denoise": 10.0}, attempt_no=2),
               actor_stop(80, "editor-0", 80), run_end(81, "complete")]
    f = build_report(write_run(tmp_path / "run", records))["figures"]
    assert f["time"]["busy_by_phase"]["failed_model"] == 0
    assert f["cost"]["failed_attempts"] == 0 and f["time"]["busy_seconds"] == pytest.approx(10.0)


def test_synthetic_failed_tries_carry_failed_model_not_denoise(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=3, retried=(1,), pricing=PRICES)
    records = [json.loads(line) for line in (run.run_dir / "ledger.jsonl").read_text().splitlines()]
    (failed,) = [r for r in records if r.get("outcome") == "retry-scheduled"]
    assert failed["phases"]["failed_model"] > 0
    model = ("text_encode", "context_encode", "denoise", "decode_latents")
    assert all(failed["phases"][p] == 0 for p in model)  # the real actor writes none of these
    f = build_report(run.run_dir)["figures"]
    assert f["cost"]["failed_attempts_busy_seconds"] == pytest.approx(failed["phases"]["failed_model"])


# 2. resumed runs: wall time and status --------------------------------------------------------

def _resumed(third_killed: bool = False) -> list[dict]:
    """Invocation 1 (81 s), invocation 2 the next day (81 s); row 2 is a bad manifest row that
    every invocation's planning refuses again."""
    records = [run_start(0, 3), attempt(1, 2, "failed-permanent", start=1, end=1, error_class="bad-row"),
               actor_load(61, "editor-0", 1, 60), attempt(71, 0, "ok", "editor-0", 61, 71, phases(denoise=10.0)),
               actor_stop(80, "editor-0", 80), run_end(81, "interrupted"),
               run_start(DAY, 3),
               attempt(DAY + 1, 2, "failed-permanent", start=DAY + 1, end=DAY + 1, error_class="bad-row",
                       attempt_no=2),
               actor_load(DAY + 61, "editor-0", DAY + 1, DAY + 60, pid=2),
               attempt(DAY + 71, 1, "ok", "editor-0", DAY + 61, DAY + 71, phases(denoise=10.0), pid=2),
               actor_stop(DAY + 80, "editor-0", DAY + 80, pid=2), run_end(DAY + 81, "failed-rows")]
    if third_killed:  # killed 5 s in: no run-end
        records += [run_start(2 * DAY, 3),
                    attempt(2 * DAY + 5, 2, "failed-permanent", start=2 * DAY + 5, end=2 * DAY + 5,
                            error_class="bad-row", attempt_no=3)]
    return records


def test_wall_time_of_a_resumed_run_sums_its_invocations(tmp_path):
    report = build_report(write_run(tmp_path / "run", _resumed()))
    run = report["figures"]["run"]
    assert run["wall_seconds"] == pytest.approx(81 + 81)  # not the 24 h between them
    assert run["status"] == "failed-rows" and run["starts"] == 2
    assert "wall time (driver running, summed over its 2 invocations)**: 162.0 s" in report_markdown(report)


def test_a_killed_last_invocation_is_unfinished_and_counts_to_its_last_record(tmp_path):
    f = build_report(write_run(tmp_path / "run", _resumed(third_killed=True)))["figures"]
    assert f["run"]["status"] == "unfinished"  # not the second invocation's failed-rows
    assert f["run"]["wall_seconds"] == pytest.approx(81 + 81 + 5)


def test_an_invocation_killed_after_loading_is_unfinished(tmp_path):
    records = [run_start(0, 2), actor_load(61, "editor-0", 1, 60), attempt(71, 0, "ok", "editor-0", 61, 71, phases(denoise=10.0)),
               actor_stop(80, "editor-0", 80), run_end(81, "interrupted"),
               run_start(1000, 2), actor_load(1061, "editor-0", 1001, 1060, pid=2)]
    f = build_report(write_run(tmp_path / "run", records))["figures"]
    assert f["run"]["status"] == "unfinished"
    assert f["run"]["wall_seconds"] == pytest.approx(81 + 61)


# 3. cache saved: marginal cost ----------------------------------------------------------------

def _mostly_hits() -> list[dict]:
    records = [run_start(0, 1001)]
    records += [attempt(1, i, "cache-hit", start=1, end=1) for i in range(1, 1001)]
    records += [actor_load(61, "editor-0", 1, 61), attempt(71, 0, "ok", "editor-0", 61, 71, phases(denoise=10.0)),
                actor_stop(72, "editor-0", 72), run_end(73, "complete")]
    return records


def test_cache_saved_is_hits_times_the_marginal_cost_of_a_generated_image(tmp_path):
    run_dir = write_run(tmp_path / "run", _mostly_hits())
    report = build_report(run_dir)
    cost = report["figures"]["cost"]
    assert cost["per_generated_image"] == pytest.approx(71 * PER_SECOND)  # load and idle included
    assert cost["marginal_per_generated_image"] == pytest.approx(10 * PER_SECOND)
    assert cost["cache_saved"] == pytest.approx(1000 * 10 * PER_SECOND)  # not 1000 x 71 s
    md = report_markdown(report)
    assert "cache saved**: $100.00 (1000 cache hits; cache hits x this run's marginal cost per generated image" in md
    assert "historical" not in md
    assert rollup([run_dir])["cost"]["cache_saved"] == pytest.approx(1000 * 10 * PER_SECOND)


# 4. retried ----------------------------------------------------------------------------------

def test_a_row_refused_again_at_each_resume_is_not_retried(tmp_path):
    f = build_report(write_run(tmp_path / "run", _resumed(third_killed=True)))["figures"]
    assert f["rows"]["retried"] == 0 and f["rows"]["failed"] == 1


def test_retried_counts_rows_run_again_after_a_retry_scheduled_attempt(tmp_path):
    records = [run_start(0, 3), actor_load(11, "editor-0", 0, 10),
               # row 0: retried and done; row 1: retry scheduled, then the run stopped; row 2: one try
               attempt(15, 0, "retry-scheduled", "editor-0", 10, 15, phases(failed_model=5.0), error_class="transient"),
               attempt(16, 1, "retry-scheduled", "editor-0", 10, 15, phases(failed_model=1.0), error_class="transient"),
               attempt(25, 0, "ok", "editor-0", 15, 25, phases(denoise=10.0), attempt_no=2),
               attempt(35, 2, "ok", "editor-0", 25, 35, phases(denoise=10.0)),
               actor_stop(36, "editor-0", 36), run_end(37, "interrupted")]
    f = build_report(write_run(tmp_path / "run", records))["figures"]
    assert f["rows"]["retried"] == 1
    assert f["rows"]["unfinished"] == 1


# 5. recovered attempts -----------------------------------------------------------------------

def _recovered_after_stop() -> list[dict]:
    """Invocation 1 is stopped (SIGTERM) between row 1's commit and its ledger line; invocation 2's
    planning writes the recovered ok with invocation 1's actor and times."""
    return [run_start(0, 2), actor_load(61, "editor-0", 0, 60), attempt(71, 0, "ok", "editor-0", 60, 70, phases(denoise=10.0)),
            actor_stop(81, "editor-0", 81), run_end(82, "interrupted"),
            run_start(1000, 2),
            attempt(1001, 1, "ok", "editor-0", 70, 80, phases(denoise=10.0), recovered=True),
            run_end(1002, "complete")]


def test_a_recovered_attempt_is_billed_inside_its_stopped_holding(tmp_path):
    run_dir = write_run(tmp_path / "run", _recovered_after_stop())
    report = build_report(run_dir)
    f = report["figures"]
    assert f["time"]["held_seconds"] == pytest.approx(81.0)  # not 81 + 10 s of a second holding
    assert f["cost"]["total"] == pytest.approx(81 * PER_SECOND)
    (actor,) = f["actors"]
    assert actor["attempts"] == 2 and actor["busy_seconds"] == pytest.approx(20.0)
    assert actor["end_source"] == "actor-stop"
    assert not any("no actor-load" in note for note in report["notes"])
    assert f["rows"]["done"] == 2
    assert budget_spent(run_dir, now=5000.0) == pytest.approx(f["cost"]["total"])


def test_an_attempt_written_after_its_actor_stopped_is_not_billed_twice(tmp_path):
    records = [run_start(0, 2), actor_load(61, "editor-0", 0, 60), attempt(71, 0, "ok", "editor-0", 60, 70, phases(denoise=10.0)),
               actor_stop(81, "editor-0", 81),
               attempt(82, 1, "retry-scheduled", "editor-0", 70, 80, phases(failed_model=10.0), error_class="transient"),
               run_end(83, "interrupted")]
    run_dir = write_run(tmp_path / "run", records)
    f = build_report(run_dir)["figures"]
    assert f["time"]["held_seconds"] == pytest.approx(81.0) and len(f["actors"]) == 1
    assert f["cost"]["failed_attempts"] == pytest.approx(10 * PER_SECOND)
    assert budget_spent(run_dir, now=5000.0) == pytest.approx(f["cost"]["total"])


def test_a_recovered_attempt_of_a_killed_invocation_extends_its_holding_in_report_and_budget(tmp_path):
    # Invocation 1 is killed: no actor-stop, no run-end; row 1 was committed (70..80) but its
    # ledger line never written; invocation 2 recovers it.
    records = [run_start(0, 2), actor_load(61, "editor-0", 0, 60), attempt(71, 0, "ok", "editor-0", 60, 70, phases(denoise=10.0)),
               run_start(1000, 2),
               attempt(1001, 1, "ok", "editor-0", 70, 80, phases(denoise=10.0), recovered=True),
               run_end(1002, "complete")]
    run_dir = write_run(tmp_path / "run", records)
    report = build_report(run_dir)
    f = report["figures"]
    assert f["time"]["held_seconds"] == pytest.approx(80.0) and len(f["actors"]) == 1
    assert budget_spent(run_dir, now=5000.0) == pytest.approx(f["cost"]["total"]) == pytest.approx(80 * PER_SECOND)


# 6. lower bound ------------------------------------------------------------------------------

def test_actors_without_actor_stop_make_the_cost_a_lower_bound(tmp_path):
    records = [run_start(0, 2), actor_load(61, "editor-0", 0, 60), actor_load(61, "editor-1", 0, 60),
               attempt(71, 0, "ok", "editor-0", 60, 70, phases(denoise=10.0)),
               attempt(71, 1, "ok", "editor-1", 60, 70, phases(denoise=10.0)),
               actor_stop(80, "editor-0", 80)]  # the driver was killed before editor-1's stop
    report = build_report(write_run(tmp_path / "run", records))
    assert any(n.startswith("cost is a lower bound: 1 actor(s) have no actor-stop (held time ends at their "
                            "last record)") for n in report["notes"])
    assert "cost is a lower bound" not in " ".join(build_report(write_run(tmp_path / "ok", _mostly_hits()))["notes"])


# 7. budget stop ------------------------------------------------------------------------------

def _budget_stopped(stop_end: float) -> list[dict]:
    return [run_start(0, 3), actor_load(61, "editor-0", 0, 60), attempt(71, 0, "ok", "editor-0", 60, 70, phases(denoise=10.0)),
            budget_stop(72, 0.719800001, 0.72, rows_not_dispatched=1),
            attempt(81, 1, "ok", "editor-0", 70, 80, phases(denoise=10.0)),
            actor_stop(stop_end, "editor-0", stop_end), run_end(stop_end + 1, "budget-stopped")]


def test_budget_stop_line_shows_money_and_the_overshoot(tmp_path):
    md = report_markdown(build_report(write_run(tmp_path / "run", _budget_stopped(200.0))))
    line = next(line for line in md.splitlines() if "budget stop" in line)
    assert "spent when dispatch stopped $0.7198 of cap $0.7200; 1 rows not dispatched" in line
    assert "the final total $2.00 exceeds the cap by $1.28 (batches in flight and the idle tail" in line
    assert "0.719800001" not in md


def test_budget_stop_line_under_the_cap_has_no_overshoot(tmp_path):
    md = report_markdown(build_report(write_run(tmp_path / "run", _budget_stopped(71.0))))
    line = next(line for line in md.splitlines() if "budget stop" in line)
    assert "spent when dispatch stopped $0.7198 of cap $0.7200" in line and "exceeds" not in line


# 8. --verify with other prices; notes compared -------------------------------------------------

def test_verify_names_a_pricing_mismatch_and_the_fix(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", _mostly_hits())
    alt = tmp_path / "alt.json"
    alt.write_text(json.dumps(PRICES | {"device_hour": PRICES["device_hour"] | {"H100": 4.0}}))
    assert report_main([str(run_dir), "--pricing", str(alt), "--no-review", "--print", "none", "--quiet"]) == 0
    capsys.readouterr()
    assert report_main([str(run_dir), "--verify"]) == 1
    out = capsys.readouterr().out
    assert f"was written with the prices from {alt}" in out and f"{run_dir / 'config.json'} (pricing)" in out
    assert f"--verify --pricing {alt}" in out
    assert "disagrees with ledger.jsonl" not in out
    assert report_main([str(run_dir), "--verify", "--pricing", str(alt), "--outputs", "none"]) == 0  # no store

    generate_reports(run_dir, review=False)  # now with the run's own prices
    capsys.readouterr()
    assert report_main([str(run_dir), "--verify", "--pricing", str(alt)]) == 1
    assert "verify it with the run's own frozen prices" in capsys.readouterr().out


def test_verify_compares_the_notes(tmp_path, capsys):
    run_dir = write_run(tmp_path / "run", _recovered_after_stop())
    generate_reports(run_dir, review=False)
    path = run_dir / "report.json"
    stored = json.loads(path.read_text())
    stored["notes"] = ["all good"]
    path.write_text(json.dumps(stored))
    assert report_main([str(run_dir), "--verify"]) == 1
    assert "notes[0]: stored 'all good', recomputed from ledger (absent)" in capsys.readouterr().out


# 9. unknown outcomes -------------------------------------------------------------------------

def test_an_unknown_outcome_is_failed_permanent_everywhere(tmp_path):
    records = [run_start(0, 2), actor_load(11, "editor-0", 0, 10),
               attempt(15, 0, "mystery", "editor-0", 10, 15, phases(denoise=5.0)),
               attempt(25, 1, "ok", "editor-0", 15, 25, phases(denoise=10.0)),
               actor_stop(26, "editor-0", 26), run_end(27, "failed-rows")]
    run_dir = write_run(tmp_path / "run", records)
    report = build_report(run_dir)
    f = report["figures"]
    assert f["attempts"]["failed_permanent"] == 1
    assert f["rows"]["failed"] == 1 and f["rows"]["unfinished"] == 0
    assert analyse_run(run_dir).status_of("r0") == "failed"
    assert f["cost"]["failed_attempts"] == pytest.approx(5 * PER_SECOND)
    assert any("unknown attempt outcome 'mystery'" in n and "failed-permanent" in n for n in report["notes"])
