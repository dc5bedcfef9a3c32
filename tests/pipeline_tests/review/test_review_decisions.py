"""Review decisions: OUT/decisions.jsonl keyed by cache key, folded last-wins; bad requests refused
with nothing written; concurrent reviewers; a server killed mid-write loses only that decision."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from review_helpers import call, decision_lines, session, synthetic

from pipeline.review.decisions import DecisionLog, decision_record, decisions_path, read_decisions
from pipeline.review.service import RequestError

ROOT = str(Path(__file__).resolve().parents[3])


def test_decisions_are_keyed_by_cache_key_and_the_last_one_wins(tmp_path):
    run = synthetic(tmp_path / "out")
    s = session(run, reviewer="alice")
    s.decide("reject", note="shadow is off", row_ids=["p0-v0"])
    s.decide("approve", row_ids=["p0-v0", "p0-v2"])  # p0-v2 is a cache hit: it has a key too
    lines = decision_lines(tmp_path / "out")
    assert [(r["row_id"], r["decision"], r["reviewer"]) for r in lines] == [
        ("p0-v0", "reject", "alice"), ("p0-v0", "approve", "alice"), ("p0-v2", "approve", "alice")]
    assert all(r["type"] == "decision" and isinstance(r["ts"], float) for r in lines)
    assert lines[0]["note"] == "shadow is off"
    folded = read_decisions(tmp_path / "out")
    key0 = run.rows[0]["key"]
    assert set(folded) == {key0, run.rows[2]["key"]}
    assert folded[key0].decision == "approve" and folded[key0].reviewer == "alice"


def test_a_decision_carries_to_the_next_run_that_gets_the_image_as_a_cache_hit(tmp_path):
    out = tmp_path / "out"
    first = synthetic(out, run_id="night-1", failed=(), cache_hits=())
    session(first).decide("approve", row_ids=["p1-v3"])
    session(first).decide("reject", note="too dark", row_ids=["p2-v0"])
    # The next night gets every image as a cache hit (same keys)
    second = synthetic(out, run_id="night-2", failed=(), cache_hits=tuple(range(12)))
    page = session(second, reviewer="bob").query({"status": "cache-hit"}, 0, 100)
    by_id = {r["row_id"]: r for r in page["rows"]}
    assert page["total"] == 12
    assert by_id["p1-v3"]["carried"] and by_id["p1-v3"]["decision"]["decision"] == "approve"
    assert by_id["p2-v0"]["decision"] == {**by_id["p2-v0"]["decision"], "decision": "reject",
                                          "note": "too dark", "reviewer": "alice", "run_id": "night-1"}
    waiting = session(second).query({"decision": "none"}, 0, 100)
    assert waiting["total"] == 10 and "p1-v3" not in {r["row_id"] for r in waiting["rows"]}


def test_unknown_row_ids_are_refused_and_nothing_is_written(tmp_path):
    run = synthetic(tmp_path / "out")
    with pytest.raises(RequestError, match=r"unknown row id\(s\) 'nope'.*run-synthetic"):
        session(run).decide("approve", row_ids=["p0-v0", "nope"])
    assert not decisions_path(tmp_path / "out").exists()


def test_a_decision_for_a_failed_row_is_refused_with_its_reason(tmp_path):
    run = synthetic(tmp_path / "out")
    with pytest.raises(RequestError, match=r"row p0-v1 has no output to decide on: it failed "
                                           r"\(image product-0.png cannot be decoded\)"):
        session(run).decide("approve", row_ids=["p0-v1"])
    assert not decisions_path(tmp_path / "out").exists()


def test_unknown_decision_and_bad_reviewer_are_refused(tmp_path):
    run = synthetic(tmp_path / "out")
    with pytest.raises(RequestError, match="decision 'maybe' is unknown; use one of approve, reject, redo"):
        session(run).decide("maybe", row_ids=["p0-v0"])
    with pytest.raises(ValueError, match="reviewer name"):
        decision_record("k" * 64, "approve", reviewer="bad\nname")
    assert not decisions_path(tmp_path / "out").exists()


def test_bulk_decision_covers_a_product_and_skips_its_failed_row(tmp_path):
    run = synthetic(tmp_path / "out")
    result = session(run).decide("approve", filters={"product": "P000"})
    assert result == {"recorded": 3, "skipped": 1, "decision": "approve"}  # p0-v1 failed
    assert sorted(r["row_id"] for r in decision_lines(tmp_path / "out")) == ["p0-v0", "p0-v2", "p0-v3"]
    result = session(run).decide("redo", filters={"variant": "bg-3", "decision": "none"})
    assert result["recorded"] == 2  # p1-v3, p2-v3: p0-v3 is approved already
    with pytest.raises(RequestError, match="needs at least one filter"):
        session(run).decide("reject", filters={})
    with pytest.raises(RequestError, match="unknown filter 'colour'"):
        session(run).decide("reject", filters={"colour": "red"})


WRITER = """
import sys
from pipeline.review.decisions import DecisionLog, decision_record
log = DecisionLog(sys.argv[1])
for i in range(int(sys.argv[3])):
    log.append([decision_record(f"{sys.argv[2]}-{i:04d}", "approve", reviewer=sys.argv[2],
                                note="n" * 1500)])
"""


def test_concurrent_reviewers_on_one_log_lose_and_tear_nothing(tmp_path):
    path = tmp_path / "decisions.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name, "150"], cwd=ROOT)
             for name in ("alice", "bob", "carol")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    raw = path.read_bytes().splitlines()
    assert len(raw) == 450
    records = [json.loads(line) for line in raw]  # every line is whole JSON
    assert {r["reviewer"] for r in records} == {"alice", "bob", "carol"}
    assert len(DecisionLog(path).current()) == 450


def _start_review(run_dir, env):
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "review", str(run_dir), "--reviewer", "kim"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # a reader thread, not select(): the server prints its banner in one write, and a buffered
    # readline takes every line of it while select() on the pipe then sees nothing more
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if "token=" in line:
            url = urllib.parse.urlsplit(line.strip())
            return proc, url.port, urllib.parse.parse_qs(url.query)["token"][0]
    proc.kill()
    pytest.fail(f"review server did not start: {proc.stderr.read()}")


def test_server_killed_mid_write_keeps_the_log_readable_and_every_earlier_decision(tmp_path):
    run = synthetic(tmp_path / "out")
    env = {**os.environ, "KONTEXT_TEST_KILL_AT": "ledger-mid-write:3"}
    proc, port, token = _start_review(run.run_dir, env)
    try:
        for row in ("p0-v0", "p0-v2"):
            status, body, _ = call(port, "/api/decisions", token=token, body={"decision": "approve", "rows": [row]})
            assert status == 200 and body["recorded"] == 1
        with pytest.raises(OSError):  # the third write dies half-way: the connection drops
            call(port, "/api/decisions", token=token, body={"decision": "reject", "rows": ["p0-v3"]})
        assert proc.wait(timeout=60) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    path = decisions_path(tmp_path / "out")
    assert not path.read_bytes().endswith(b"\n")  # the torn line of the decision in flight
    folded = read_decisions(tmp_path / "out")
    assert {d.row_id: d.decision for d in folded.values()} == {"p0-v0": "approve", "p0-v2": "approve"}
    session(run, reviewer="kim").decide("reject", row_ids=["p0-v3"])  # the next writer cuts it off
    lines = decision_lines(tmp_path / "out")
    assert [(r["row_id"], r["decision"]) for r in lines] == [
        ("p0-v0", "approve"), ("p0-v2", "approve"), ("p0-v3", "reject")]
