"""``last_budget_stop`` reads the ledger from its end: the same answer as a full parse with
``read_ledger`` (torn last line, odd lines, records across block boundaries), at the cost of
the ledger's tail when the stop is near the end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pipeline.ledger
from jobs.runner import last_budget_stop
from pipeline.ledger import read_ledger


def full_parse(run_dir: Path) -> dict[str, Any] | None:
    """The answer as it was: every record parsed, the last budget-stop kept."""
    stops = [r for r in read_ledger(run_dir / "ledger.jsonl") if r.get("type") == "budget-stop"]
    return stops[-1] if stops else None


def line(rec: Any) -> bytes:
    return json.dumps(rec, separators=(",", ":")).encode() + b"\n"


def attempt(i: int) -> dict[str, Any]:
    return {"v": 1, "type": "attempt", "run_id": "r", "row_index": i, "row_id": f"p{i:06d}",
            "outcome": "cache-hit", "key": f"{i:064x}", "start": 1.5e9 + i}


def stop(spent: float) -> dict[str, Any]:
    return {"v": 1, "type": "budget-stop", "run_id": "r", "spent": spent, "cap": 12.0,
            "currency": "USD", "rows_not_dispatched": 3}


def write(tmp_path: Path, payload: bytes) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "ledger.jsonl").write_bytes(payload)
    return tmp_path


RUN_START = line({"v": 1, "type": "run-start", "run_id": "r"})
RUN_END = line({"v": 1, "type": "run-end", "run_id": "r", "status": "budget-stopped"})
LEDGERS = {
    "no ledger": None,
    "empty": b"",
    "no stop": RUN_START + b"".join(line(attempt(i)) for i in range(5)) + RUN_END,
    "one stop": RUN_START + line(attempt(0)) + line(stop(1.0)) + line(attempt(1)) + RUN_END,
    "several stops": RUN_START + line(stop(1.0)) + line(attempt(0)) + RUN_END + RUN_START
                     + line(stop(2.0)) + line(attempt(1)) + line(stop(3.0)) + RUN_END,
    # A writer killed mid-line: the torn stop after the real one is not a record.
    "torn last line": RUN_START + line(stop(1.0)) + line(stop(2.0))[:40],
    "torn only line": line(stop(2.0))[:-10],
    # A complete object whose newline was not written yet is a record (read_ledger takes it).
    "no final newline": RUN_START + line(stop(1.0)) + line(stop(2.0))[:-1],
    "odd lines": RUN_START + line(stop(1.0)) + b"\n\n  \n" + b'"budget-stop"\n'
                 + b'["budget-stop"]\n' + b'{"type":"budget-stop"\n' + b"\xff\xfe budget-stop\n"
                 + line({"note": "budget-stop"}) + b"  " + line(stop(4.0)).rstrip() + b"  \n"
                 + line(attempt(2)),
    # The type spelled through a JSON escape is still a budget-stop to json.loads.
    "escaped type": RUN_START + line(stop(1.0)) + line(stop(5.0)).replace(b"budget-stop",
                                                                           b"budget\\u002dstop"),
    "crlf": RUN_START + line(stop(6.0)).replace(b"\n", b"\r\n") + line(attempt(3)),
}


@pytest.mark.parametrize("name", LEDGERS)
def test_same_answer_as_the_full_parse(tmp_path: Path, name: str) -> None:
    payload = LEDGERS[name]
    if payload is not None:
        write(tmp_path, payload)
    expected = full_parse(tmp_path)
    assert last_budget_stop(tmp_path) == expected
    expected_spent = {"no ledger": None, "empty": None, "no stop": None, "one stop": 1.0,
                      "several stops": 3.0, "torn last line": 1.0, "torn only line": None,
                      "no final newline": 2.0, "odd lines": 4.0, "escaped type": 5.0,
                      "crlf": 6.0}[name]
    assert (expected or {}).get("spent") == expected_spent  # the cases test what they say


@pytest.mark.parametrize("name", [n for n, p in LEDGERS.items() if p])
def test_records_across_block_boundaries(tmp_path: Path, monkeypatch, name: str) -> None:
    write(tmp_path, LEDGERS[name])
    expected = full_parse(tmp_path)
    for block in (1, 2, 3, 7, 16, 41, 64, 100, 1000):
        monkeypatch.setattr(pipeline.ledger, "TAIL_BLOCK", block)
        assert last_budget_stop(tmp_path) == expected, block


PIECES = st.sampled_from([RUN_START, RUN_END, line(attempt(1)), line(stop(1.5)),
                          line(stop(2.5)), b"\n", b"garbage budget-stop\n", b'"budget-stop"\n'])


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(PIECES, max_size=12), torn=st.integers(min_value=0, max_value=80),
       block=st.integers(min_value=1, max_value=90))
def test_random_ledgers_match_the_full_parse(tmp_path_factory, pieces: list[bytes], torn: int,
                                             block: int) -> None:
    folder = tmp_path_factory.mktemp("ledger")
    payload = b"".join(pieces) + line(stop(9.0))[:torn]  # maybe a torn (or whole) last line
    write(folder, payload)
    original = pipeline.ledger.TAIL_BLOCK
    pipeline.ledger.TAIL_BLOCK = block
    try:
        assert last_budget_stop(folder) == full_parse(folder)
    finally:
        pipeline.ledger.TAIL_BLOCK = original


class CountingFile:
    """A read-only binary file that counts the bytes read from it."""

    def __init__(self, path: Path, counter: list[int]) -> None:
        self._f = open(path, "rb")  # closed by __exit__
        self._counter = counter

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self._counter[0] += len(data)
        return data

    def seek(self, *args: int) -> int:
        return self._f.seek(*args)

    def __enter__(self) -> CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def test_only_the_tail_of_a_large_ledger_is_read(tmp_path: Path, monkeypatch) -> None:
    bytes_read = [0]

    def counting_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> CountingFile:
        assert mode == "rb"
        return CountingFile(Path(path), bytes_read)

    monkeypatch.setattr(pipeline.ledger, "open", counting_open, raising=False)
    block = pipeline.ledger.TAIL_BLOCK
    rows = b"".join(line(attempt(i)) for i in range(40_000))
    stopped = write(tmp_path / "stopped", RUN_START + line(stop(0.5)) + rows + line(stop(7.0))
                    + line(attempt(40_000)) + RUN_END)
    size = (stopped / "ledger.jsonl").stat().st_size
    assert size > 50 * block
    assert last_budget_stop(stopped)["spent"] == 7.0
    assert 0 < bytes_read[0] <= block  # the last block held it
    print(f"\nledger of {size:_} bytes: {bytes_read[0]:_} read to find its last budget-stop")

    # Without a stop there is nothing to stop at: the wrapper sees every byte (it counts).
    bytes_read[0] = 0
    unstopped = write(tmp_path / "unstopped", RUN_START + rows + RUN_END)
    assert last_budget_stop(unstopped) is None
    assert bytes_read[0] == (unstopped / "ledger.jsonl").stat().st_size
