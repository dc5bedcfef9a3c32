"""Report figures equal sums over the ledger; the report is deterministic; --verify catches edits."""

import argparse
import json

import pytest
from ledger_records import (
    actor_load,
    actor_stop,
    attempt,
    ledger_text,
    record,
    run_end,
    run_start,
    write_run,
)
from synthetic_runs import make_synthetic_run

from pipeline.reports import build_report, generate_reports, rollup
from pipeline.reports.command import main, register

H100 = 2.99  # pipeline/pricing.yaml
# device-busy; failed_model: a model call that raised (the retried rows' first tries)
MODEL_PHASES = ("text_encode", "context_encode", "denoise", "decode_latents", "failed_model")
CPU_PHASES = ("read", "decode", "file_encode", "commit")  # CPU threads, overlapped with the model


@pytest.fixture()
def run(tmp_path):
    return make_synthetic_run(tmp_path / "out", products=3, variants=4, failed=(1,), cache_hits=(2,),
                              retried=(3, 7), not_run=(11,))


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines() if line.strip()]


def test_totals_equal_sums_over_the_ledger(run):
    records = _records(run.run_dir)
    attempts = [r for r in records if r["type"] == "attempt"]
    worked = [a for a in attempts if a["outcome"] != "cache-hit"]
    loads = {r["actor"]: r for r in records if r["type"] == "actor-load"}
    stops = {r["actor"]: r for r in records if r["type"] == "actor-stop"}
    held = sum(stops[a]["end"] - loads[a]["start"] for a in loads)
    load = sum(r["end"] - r["start"] for r in loads.values())
    busy = sum(a["phases"][p] for a in worked for p in MODEL_PHASES)
    failed_busy = sum(a["phases"][p] for a in worked if a["outcome"] != "ok" for p in MODEL_PHASES)
    ok_busy = sum(a["phases"][p] for a in worked if a["outcome"] == "ok" for p in MODEL_PHASES)
    retry_then_ran = {a["row_id"] for a in worked if a["outcome"] == "retry-scheduled"} & {
        a["row_id"] for a in worked if a["attempt"] > 1}
    cpu = sum(a["phases"][p] for a in worked for p in CPU_PHASES)

    f = build_report(run.run_dir)["figures"]
    assert f["rows"] == {"total": 12, "done": 9, "cache_hits": 1, "failed": 1, "retried": len(retry_then_ran),
                         "unfinished": 1, "delivered": 10}
    assert len(retry_then_ran) == 2
    assert f["attempts"]["total"] == len(attempts) == 13
    assert f["attempts"]["retry_scheduled"] == 2 and f["attempts"]["failed_permanent"] == 1
    for phase in MODEL_PHASES:
        assert f["time"]["busy_by_phase"][phase] == pytest.approx(sum(a["phases"][phase] for a in worked), abs=2e-6)
    assert f["time"]["held_seconds"] == pytest.approx(held, abs=2e-6)
    assert f["time"]["load_seconds"] == pytest.approx(load, abs=2e-6)
    for phase in CPU_PHASES:
        assert f["time"]["cpu_by_phase"][phase] == pytest.approx(sum(a["phases"][phase] for a in worked), abs=2e-6)
    assert set(f["time"]["busy_by_phase"]) == set(MODEL_PHASES)
    assert f["time"]["busy_seconds"] == pytest.approx(busy, abs=2e-6)
    assert f["time"]["cpu_seconds"] == pytest.approx(cpu, abs=2e-6)
    assert f["time"]["idle_seconds"] == pytest.approx(held - load - busy, abs=2e-6)
    assert f["time"]["utilisation"] == pytest.approx(busy / held, abs=2e-6)
    assert f["devices"]["H100"]["actors"] == 2
    cost = f["cost"]
    assert cost["total"] == pytest.approx(held / 3600 * H100, abs=2e-6)
    assert cost["failed_attempts"] == pytest.approx(failed_busy / 3600 * H100, abs=2e-6)
    assert failed_busy == pytest.approx(2 * 2.0)  # two first tries whose model call raised after 2 s
    assert cost["failed_attempts"] > 0  # the retried rows' first tries are shown, not hidden
    assert cost["failed_attempts_busy_seconds"] == pytest.approx(failed_busy, abs=2e-6)
    assert cost["per_generated_image"] == pytest.approx(held / 3600 * H100 / 9, abs=2e-6)
    assert cost["per_delivered_image"] == pytest.approx(held / 3600 * H100 / 10, abs=2e-6)
    assert cost["hosted_api"]["flux.1-kontext-pro"]["cost"] == pytest.approx(9 * 0.04, abs=2e-6)  # generated only
    assert cost["hosted_api"]["flux.1-kontext-dev"]["cost"] == pytest.approx(9 * 0.025, abs=2e-6)
    assert cost["marginal_per_generated_image"] == pytest.approx(ok_busy / 3600 * H100 / 9, abs=2e-6)
    assert cost["cache_saved"] == pytest.approx(1 * ok_busy / 3600 * H100 / 9, abs=2e-6)
    assert sum(a["cost"] for a in f["actors"]) == pytest.approx(cost["total"], abs=2e-6)


def test_actor_that_died_is_charged_until_its_last_attempt(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=2, variants=3, actor_dies=True)
    records = _records(run.run_dir)
    last_end = max(r["end"] for r in records if r["type"] == "attempt" and r["actor"] == "actor-1")
    start = next(r["start"] for r in records if r["type"] == "actor-load" and r["actor"] == "actor-1")
    actor = next(a for a in build_report(run.run_dir)["figures"]["actors"] if a["actor"] == "actor-1")
    assert actor["end_source"] == "last-attempt"
    assert actor["held_seconds"] == pytest.approx(last_end - start, abs=2e-6)


def test_report_json_is_byte_identical_and_carries_no_generation_time(run):
    first = generate_reports(run.run_dir, review=False, generated_at="2031-01-01T00:00:00Z")
    data1 = first.files["json"].read_bytes()
    generate_reports(run.run_dir, review=False, generated_at="2032-02-02T00:00:00Z")
    assert first.files["json"].read_bytes() == data1
    assert b"2032-02-02" not in data1
    assert "2032-02-02" in first.files["md"].read_text()
    md = first.files["md"].read_text()
    assert "list prices of common GPU clouds" in md and "as of 2026-11-27" in md
    assert "of which failed attempts" in md


def test_report_tolerates_a_truncated_last_line(run):
    ledger = run.run_dir / "ledger.jsonl"
    before = build_report(run.run_dir)["figures"]
    with open(ledger, "a") as handle:
        handle.write('{"v":1,"type":"attempt","run_id":"run-synthetic","row_')
    report = build_report(run.run_dir)
    assert report["figures"] == before
    assert any("incomplete" in note for note in report["notes"])


def _verify(run_dir, capsys):
    code = main([str(run_dir), "--verify"])
    return code, capsys.readouterr()


def test_verify_passes_on_an_untouched_run_and_catches_an_altered_record(run, capsys):
    assert main([str(run.run_dir), "--no-review", "--print", "none", "--quiet"]) == 0
    assert _verify(run.run_dir, capsys)[0] == 0

    ledger = run.run_dir / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec["type"] == "attempt" and rec["outcome"] == "ok":
            rec["phases"]["denoise"] += 30.0  # someone edits one record after the fact
            lines[i] = json.dumps(rec)
            break
    ledger.write_text("\n".join(lines) + "\n")
    code, out = _verify(run.run_dir, capsys)
    assert code == 1
    assert "figures.time.busy_by_phase.denoise" in out.out
    assert "figures.time.utilisation" in out.out
    assert "ledger.jsonl changed since report.json was written" in out.err


def test_verify_catches_an_altered_outcome(run, capsys):
    main([str(run.run_dir), "--no-review", "--print", "none", "--quiet"])
    ledger = run.run_dir / "ledger.jsonl"
    text = ledger.read_text()
    ledger.write_text(text.replace('"outcome":"ok"', '"outcome":"failed-permanent"', 1))
    code, out = _verify(run.run_dir, capsys)
    assert code == 1
    assert "figures.rows.done: stored 9, recomputed from ledger 8" in out.out
    assert "figures.rows.failed: stored 1, recomputed from ledger 2" in out.out


def test_verify_catches_an_edited_stored_report(run, capsys):
    main([str(run.run_dir), "--no-review", "--print", "none", "--quiet"])
    path = run.run_dir / "report.json"
    report = json.loads(path.read_text())
    report["figures"]["cost"]["total"] = 0.01
    path.write_text(json.dumps(report))
    code, out = _verify(run.run_dir, capsys)
    assert code == 1 and "figures.cost.total: stored 0.01" in out.out


def test_verify_without_a_stored_report_is_a_usage_error(run, capsys):
    code, out = _verify(run.run_dir, capsys)
    assert code == 2 and "report.json does not exist" in out.err


def test_unknown_device_type_stops_the_report_naming_it(tmp_path, capsys):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=2, device_type="T4")
    assert main([str(run.run_dir), "--no-review", "--quiet"]) == 2
    assert "'T4'" in capsys.readouterr().err


def test_register_adds_the_report_subcommand(run, capsys):
    parser = argparse.ArgumentParser(prog="kontext-batch")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", str(run.run_dir), "--no-review", "--print", "json", "--quiet"])
    assert args.func(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((run.run_dir / "report.json").read_text())


def test_rollup_sums_runs_and_recomputes_ratios(tmp_path):
    a = make_synthetic_run(tmp_path / "out", run_id="night-1", products=2, variants=3, failed=(0,))
    b = make_synthetic_run(tmp_path / "out", run_id="night-2", products=2, variants=3, cache_hits=(1, 2, 3))
    fa, fb = build_report(a.run_dir)["figures"], build_report(b.run_dir)["figures"]
    total = rollup([a.run_dir, b.run_dir])
    assert [r["run_id"] for r in total["runs"]] == ["night-1", "night-2"]
    assert total["rows"]["done"] == fa["rows"]["done"] + fb["rows"]["done"] == 5 + 3
    assert total["rows"]["cache_hits"] == 3
    assert total["cost"]["total"] == pytest.approx(fa["cost"]["total"] + fb["cost"]["total"], abs=2e-6)
    assert total["cost"]["per_generated_image"] == pytest.approx(total["cost"]["total"] / 8, abs=2e-6)
    assert total["cost"]["per_delivered_image"] == pytest.approx(total["cost"]["total"] / 11, abs=2e-6)
    ok_cost = fa["cost"]["generated_busy_cost"] + fb["cost"]["generated_busy_cost"]
    assert total["cost"]["cache_saved"] == pytest.approx(3 * ok_cost / 8, abs=2e-6)
    assert total["cost"]["marginal_per_generated_image"] == pytest.approx(ok_cost / 8, abs=2e-6)
    held = fa["time"]["held_seconds"] + fb["time"]["held_seconds"]
    busy = fa["time"]["busy_seconds"] + fb["time"]["busy_seconds"]
    assert total["time"]["utilisation"] == pytest.approx(busy / held, abs=2e-6)


def test_all_cache_hits_cost_nothing_and_say_cache_saving_has_no_basis(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=3, cache_hits=(0, 1, 2), actors=0)
    outputs = generate_reports(run.run_dir, review=False)
    cost = outputs.report["figures"]["cost"]
    assert cost["total"] == 0 and cost["per_generated_image"] is None and cost["cache_saved"] is None
    assert cost["per_delivered_image"] == 0  # three images delivered for nothing
    assert cost["hosted_api"]["flux.1-kontext-pro"]["cost"] == 0  # nothing generated, nothing to buy
    assert "n/a (0 images generated this run; cache hits excluded)" in outputs.files["md"].read_text()


def test_a_driver_killed_after_run_start_still_gets_a_report(tmp_path):
    run_dir = tmp_path / "out" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    start = record("run-start", 5.0, run_id="r1", rows_total=4)
    (run_dir / "ledger.jsonl").write_text(ledger_text([start]) + '{"v":1,"type":"actor-lo')
    outputs = generate_reports(run_dir, progress=False)
    f = outputs.report["figures"]
    assert f["run"]["status"] == "unfinished" and f["rows"]["unfinished"] == 4
    assert outputs.review_page.exists() and outputs.sheets == []


def _hand_ledger(run_dir, attempts, *, held_until, load=(0.0, 20.0)):
    """A one-actor CPU-priced ledger: attempts are (start, end, phases) on actor a0."""
    run_dir.mkdir(parents=True)
    run = {"run_id": "hand"}
    records = [run_start(0.0, len(attempts), **run), actor_load(load[1], "a0", load[0], load[1], **run)]
    records += [attempt(end, i, "ok", "a0", start, end, phases, **run)
                for i, (start, end, phases) in enumerate(attempts)]
    records += [actor_stop(held_until, "a0", held_until, **run), run_end(held_until + 1, "complete", **run)]
    return write_run(run_dir, records)


def _phases(model, file_encode=0.0, read=0.0, decode=0.0, commit=0.0):
    """`model` seconds split over the four model phases, plus the CPU phases."""
    return {"text_encode": model * 0.1, "context_encode": model * 0.1, "denoise": model * 0.7,
            "decode_latents": model * 0.1, "read": read, "decode": decode, "file_encode": file_encode,
            "commit": commit}


def test_cpu_work_overlapped_with_the_next_batch_is_not_device_busy(tmp_path):
    # Three batches of 10 s model work back to back after a 20 s load; each batch's 3 s file
    # encode (+ commit) runs on a thread while the next batch is on the device. Held 20+30+3.5 s.
    attempts = [(20.0 + 10 * i, 33.5 + 10 * i, _phases(10.0, file_encode=3.0, read=0.2, decode=0.1, commit=0.5))
                for i in range(3)]
    run_dir = _hand_ledger(tmp_path / "runs" / "hand", attempts, held_until=53.5)
    report = build_report(run_dir)
    t = report["figures"]["time"]
    assert t["held_seconds"] == pytest.approx(53.5) and t["load_seconds"] == pytest.approx(20.0)
    assert t["busy_seconds"] == pytest.approx(30.0)  # model phases only
    assert t["idle_seconds"] == pytest.approx(3.5)  # not 53.5 - 20 - 41.4 < 0
    assert t["utilisation"] == pytest.approx(30.0 / 53.5)
    assert t["cpu_seconds"] == pytest.approx(3 * 3.8)
    assert t["cpu_by_phase"] == pytest.approx({"read": 0.6, "decode": 0.3, "file_encode": 9.0, "commit": 1.5})
    assert report["notes"] == []  # a consistent ledger raises no warning
    (actor,) = report["figures"]["actors"]
    assert actor["idle_seconds"] == pytest.approx(3.5) and actor["cpu_seconds"] == pytest.approx(11.4)

    md = generate_reports(run_dir, review=False).files["md"].read_text()
    assert "## CPU work (overlapped with the model)" in md
    assert "| 0.6 s | 0.3 s | 9.0 s | 1.5 s | 11.4 s |" in md
    assert "| 53.5 s | 20.0 s | 30.0 s | 3.5 s | 56.1 % |" in md
    assert "ledger inconsistent" not in md


def test_inconsistent_ledger_shows_negative_idle_and_a_warning(tmp_path):
    # Two attempts claim 20 s of model work each inside a 30 s hold after a 20 s load.
    attempts = [(20.0, 30.0, _phases(20.0)), (20.0, 30.0, _phases(20.0))]
    run_dir = _hand_ledger(tmp_path / "runs" / "hand", attempts, held_until=30.0)
    outputs = generate_reports(run_dir, review=False)
    t = outputs.report["figures"]["time"]
    assert t["idle_seconds"] == pytest.approx(30.0 - 20.0 - 40.0)
    (warning,) = outputs.report["notes"]
    assert "actor 'a0'" in warning and "idle is negative (-30.000 s)" in warning and "inconsistent" in warning
    md = outputs.files["md"].read_text()
    assert "-30.0 s (negative: ledger inconsistent, see Notes)" in md
    assert "idle is negative (-30.000 s)" in md


def test_row_cost_is_the_rows_device_busy_seconds_times_price(tmp_path):
    attempts = [(20.0, 33.5, _phases(10.0, file_encode=3.0, commit=0.5))]
    run_dir = _hand_ledger(tmp_path / "runs" / "hand", attempts, held_until=40.0)
    from pipeline.reports.report_doc import analyse_run

    row = analyse_run(run_dir).rows["r0"]
    assert row.busy_seconds == pytest.approx(10.0)
    assert row.cost == pytest.approx(10.0 / 3600 * H100)


def test_verify_keeps_cpu_work_out_of_device_figures(run, capsys):
    main([str(run.run_dir), "--no-review", "--print", "none", "--quiet"])
    ledger = run.run_dir / "ledger.jsonl"
    lines = ledger.read_text().splitlines()
    for i, line in enumerate(lines):
        rec = json.loads(line)
        if rec["type"] == "attempt" and rec["outcome"] == "ok":
            rec["phases"]["file_encode"] += 30.0
            lines[i] = json.dumps(rec)
            break
    ledger.write_text("\n".join(lines) + "\n")
    code, out = _verify(run.run_dir, capsys)
    assert code == 1
    assert "figures.time.cpu_by_phase.file_encode" in out.out and "figures.time.cpu_seconds" in out.out
    assert "figures.actors[0].cpu_seconds" in out.out or "figures.actors[1].cpu_seconds" in out.out
    assert "utilisation" not in out.out and "busy" not in out.out and "cost" not in out.out


def test_verify_refuses_a_report_written_with_the_old_cost_definitions(run, capsys):
    main([str(run.run_dir), "--no-review", "--print", "none", "--quiet"])
    path = run.run_dir / "report.json"
    report = json.loads(path.read_text())
    report["schema"] = "kontext-batch/report@1"
    path.write_text(json.dumps(report))
    code, out = _verify(run.run_dir, capsys)
    assert code == 2
    assert "is a kontext-batch/report@1 report" in out.err and "rewrite it with" in out.err
