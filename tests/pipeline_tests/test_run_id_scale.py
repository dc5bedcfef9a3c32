"""Choosing a run id reads only the tails of earlier runs' ledgers, deciding exactly as a
full parse (``read_history``) does; only the run taken is parsed in full."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import pipeline.ledger as ledger_module
import pipeline.resume as resume
import pipeline.runlock as runlock
from pipeline.ledger import LedgerWriter
from pipeline.resume import ledger_end, ledger_resumable, read_history
from pipeline.runlock import acquire_run, try_lock


def _attempts(ledger: LedgerWriter, n: int, error: str | None = None) -> None:
    ledger.append([ledger.record("attempt", row_index=i, key=f"k{i}", outcome="ok",
                                 actor="a0", error=error, phases={"denoise": 0.5})
                   for i in range(n)])


def _write(path: Path, *steps: tuple[str, dict]) -> None:
    with LedgerWriter(path, "run-x") as ledger:
        for kind, fields in steps:
            if kind == "attempts":
                _attempts(ledger, **fields)
            else:
                ledger.write(kind, **fields)


def _append_raw(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


START = ("run-start", {})
ROWS = ("attempts", {"n": 3})


def complete(p: Path) -> None:
    _write(p, START, ROWS, ("run-end", {"status": "complete"}))


def interrupted(p: Path) -> None:
    _write(p, START, ROWS, ("run-end", {"status": "interrupted"}))


def failed_rows(p: Path) -> None:
    _write(p, START, ROWS, ("run-end", {"status": "failed-rows"}))


def budget_stopped(p: Path) -> None:
    _write(p, START, ROWS, ("budget-stop", {"spent": 1.0}),
           ("run-end", {"status": "budget-stopped"}))


def end_without_status(p: Path) -> None:
    _write(p, START, ROWS, ("run-end", {}))


def killed(p: Path) -> None:
    _write(p, START, ROWS)


def killed_long(p: Path) -> None:  # the run-start lies many blocks before the end
    _write(p, START, ("attempts", {"n": 2000}))


def torn_run_end(p: Path) -> None:  # killed while writing its run-end
    _write(p, START, ROWS)
    _append_raw(p, b'{"v":1,"type":"run-end","run_id":"run-x","status":"compl')


def torn_after_complete(p: Path) -> None:  # a fragment after a finished run's run-end
    complete(p)
    _append_raw(p, b'{"v":1,"type":"attempt","row_ind')


def empty(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")


def resumed_then_killed(p: Path) -> None:
    _write(p, START, ROWS, ("run-end", {"status": "interrupted"}), START, ROWS)


def finished_then_resumed_and_killed(p: Path) -> None:
    _write(p, START, ROWS, ("run-end", {"status": "complete"}), START, ROWS)


def resumed_then_finished(p: Path) -> None:
    _write(p, START, ROWS, ("run-end", {"status": "interrupted"}), START, ROWS,
           ("run-end", {"status": "failed-rows"}))


def records_after_run_end(p: Path) -> None:  # the run-end still decides, not the last line
    _write(p, START, ROWS, ("run-end", {"status": "complete"}), ("actor-stop", {"actor": "a0"}))


def huge_line_before_end(p: Path) -> None:  # one line longer than a read block
    _write(p, START, ("attempts", {"n": 2, "error": "x" * 200_000}),
           ("run-end", {"status": "complete"}))


def escaped_and_odd_lines(p: Path) -> None:
    _write(p, START, ROWS)
    # A run-end spelled with JSON escapes is one; JSON that is not a record is not.
    _append_raw(p, b'{"type":"run\\u002dend","status":"complete"}\r\n'
                   b'["run-end"]\n{"status":"interrupted","note":"run-end"}\n\n   \n')


def only_torn(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b'{"v":1,"type":"run-start"')


LEDGERS: dict[str, tuple[Callable[[Path], None], bool]] = {  # name: (builder, resumable)
    "complete": (complete, False),
    "interrupted": (interrupted, True),
    "failed-rows": (failed_rows, False),
    "budget-stopped": (budget_stopped, False),
    "run-end without status": (end_without_status, False),
    "killed": (killed, True),
    "killed, long": (killed_long, True),
    "torn run-end": (torn_run_end, True),
    "torn line after complete": (torn_after_complete, False),
    "empty": (empty, True),
    "only a torn line": (only_torn, True),
    "interrupted, resumed, killed": (resumed_then_killed, True),
    "complete, then run-start, killed": (finished_then_resumed_and_killed, True),
    "interrupted, resumed, failed-rows": (resumed_then_finished, False),
    "records after run-end": (records_after_run_end, False),
    "line longer than a block": (huge_line_before_end, False),
    "escaped run-end, odd lines": (escaped_and_odd_lines, False),
}


@pytest.mark.parametrize("block", [7, 1 << 16])
@pytest.mark.parametrize("name", list(LEDGERS))
def test_tail_decision_equals_the_full_parse(tmp_path: Path, monkeypatch, name: str,
                                             block: int) -> None:
    monkeypatch.setattr(ledger_module, "TAIL_BLOCK", block)  # 7 bytes: lines straddle every block
    build, expected = LEDGERS[name]
    path = tmp_path / "run" / "ledger.jsonl"
    build(path)
    history = read_history(path)
    assert history.resumable is expected  # the full parse's decision, as documented
    assert ledger_end(path) == (history.exists, history.finished_status)
    assert ledger_resumable(path) is expected


def test_a_missing_ledger_is_a_new_run(tmp_path: Path) -> None:
    assert ledger_end(tmp_path / "none" / "ledger.jsonl") == (False, None)
    assert ledger_resumable(tmp_path / "none" / "ledger.jsonl")


def _count_full_parses(monkeypatch) -> list[str]:
    parsed: list[str] = []
    real = resume.read_history

    def counting(path: Path) -> resume.RunHistory:
        parsed.append(Path(path).parent.name)
        return real(path)

    monkeypatch.setattr(resume, "read_history", counting)
    monkeypatch.setattr(runlock, "read_history", counting)
    return parsed


def _finished_runs(runs: Path, base: str, n: int) -> None:
    for i in range(1, n + 1):
        complete(runs / (base if i == 1 else f"{base}-{i}") / "ledger.jsonl")


def test_choosing_an_id_among_finished_runs_parses_none_of_them(tmp_path: Path,
                                                                monkeypatch) -> None:
    runs, base = tmp_path / "runs", "run-abc"
    _finished_runs(runs, base, 6)
    parsed = _count_full_parses(monkeypatch)
    run_id, history, lock = acquire_run(runs, base, None)
    lock.release()
    assert run_id == f"{base}-7" and not history.exists
    assert parsed == [f"{base}-7"]  # the new run only, under its lock
    parsed.clear()
    assert resume.choose_run(runs, base, None)[0] == f"{base}-7"
    assert parsed == [f"{base}-7"]


def test_a_killed_run_among_finished_ones_is_the_only_one_parsed(tmp_path: Path,
                                                                 monkeypatch) -> None:
    runs, base = tmp_path / "runs", "run-abc"
    _finished_runs(runs, base, 5)
    (runs / f"{base}-3" / "ledger.jsonl").unlink()
    finished_then_resumed_and_killed(runs / f"{base}-3" / "ledger.jsonl")
    parsed = _count_full_parses(monkeypatch)
    run_id, history, lock = acquire_run(runs, base, None)
    lock.release()
    assert run_id == f"{base}-3" and history.exists and history.invocations == 2
    assert history.rows[2].final == "ok"  # the full history of the run taken
    assert parsed == [f"{base}-3"]


def test_a_busy_killed_looking_run_is_skipped_without_a_full_parse(tmp_path: Path,
                                                                   monkeypatch) -> None:
    runs, base = tmp_path / "runs", "run-abc"
    _finished_runs(runs, base, 2)
    killed(runs / f"{base}-3" / "ledger.jsonl")  # in progress elsewhere: no run-end yet
    other = try_lock(runs / f"{base}-3")  # flock is per open file: this process counts as other
    assert other is not None
    try:
        parsed = _count_full_parses(monkeypatch)
        run_id, _, lock = acquire_run(runs, base, None)
        lock.release()
    finally:
        other.release()
    assert run_id == f"{base}-4" and parsed == [f"{base}-4"]


def test_a_job_date_is_judged_from_its_ledger_tail(tmp_path: Path, monkeypatch) -> None:
    import jobs.runner
    from jobs.spec import load_job_spec

    (tmp_path / "m.parquet").write_bytes(b"not read here")
    (tmp_path / "job.yaml").write_text("name: nightly\nmanifest: m.parquet\n"
                                       "model: kontext-tiny\noutput: out\n")
    spec = load_job_spec(tmp_path / "job.yaml")

    def no_full_parse(path: Path) -> None:
        raise AssertionError(f"{path} parsed in full")

    monkeypatch.setattr(resume, "read_history", no_full_parse)
    failed_rows(spec.run_dir("2026-11-27") / "ledger.jsonl")
    done = jobs.runner.run_job(spec, "2026-11-27", progress=False, reports=False)
    assert (done.action, done.status, done.exit_code) == ("nothing-to-do", "failed-rows", 0)

    ran = []
    monkeypatch.setattr(jobs.runner, "_run", lambda *a: ran.append(a[1]) or type(
        "Summary", (), {"status": "interrupted", "exit_code": 130, "counts": {}})())
    interrupted(spec.run_dir("2026-11-28") / "ledger.jsonl")
    again = jobs.runner.run_job(spec, "2026-11-28", progress=False, reports=False)
    fresh = jobs.runner.run_job(spec, "2026-11-29", progress=False, reports=False)
    assert (again.action, fresh.action) == ("resumed", "ran")
    assert ran == ["nightly-2026-11-28", "nightly-2026-11-29"]
