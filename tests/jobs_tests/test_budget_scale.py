"""The budget meter reads its ledger in bounded chunks, with the same figures as reading it
whole: lines straddling chunks are joined, a torn last line waits for its end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from budget_helpers import Clock, one_usd_per_cpu_second

import jobs.budget
from jobs.budget import LedgerBudget
from pipeline.reports.pricing import load_pricing


class WholeFileBudget(LedgerBudget):
    """The meter as it was: everything new read with one f.read() (the reference)."""

    def _read_new(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                self._apply(rec)


@pytest.fixture
def pricing(tmp_path: Path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(one_usd_per_cpu_second()))
    return load_pricing(path)


def _line(rec: dict) -> bytes:
    # written as its own time ends, by a driver on the actors' clock (no skew)
    ts = rec.get("end", rec.get("start", 0))
    return json.dumps({"v": 1, "run_id": "r", "ts": ts, **rec}).encode() + b"\n"


def _ledger_bytes(rng: random.Random) -> bytes:
    """Two invocations (the first killed) of a run with three actors, plus lines a reader
    must skip (blank, not JSON, not an object)."""
    out = [_line({"type": "run-start"})]
    t = 0.0
    for invocation in range(2):
        for a in range(3):
            out.append(_line({"type": "actor-load", "actor": f"editor-{a}", "device_type": "CPU",
                              "start": t, "end": t + 1.0}))
        for i in range(120):
            t += rng.uniform(0.1, 2.0)
            outcome = rng.choice(["ok", "ok", "cache-hit", "retry-scheduled"])
            actor = None if outcome == "cache-hit" else f"editor-{i % 3}"
            out.append(_line({"type": "attempt", "row_index": i, "outcome": outcome,
                              "actor": actor, "end": t, "error": "e" * rng.randrange(0, 300)}))
            if i % 40 == 7:
                out.append(rng.choice([b"\n", b"   \n", b"not json\n", b"[1, 2]\n"]))
        if invocation == 0:
            out.append(_line({"type": "run-start"}))  # killed: its actors were never stopped
            t += 30.0
        else:
            for a in range(3):
                out.append(_line({"type": "actor-stop", "actor": f"editor-{a}", "end": t}))
    return b"".join(out)


def _figures(budget: LedgerBudget, now: float) -> tuple:
    return (round(budget.spent(now), 9), round(budget.estimate(3, now), 9), budget._finished,
            budget._dispatched, budget.rate_per_s(), budget._offset, budget._partial)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chunked_reads_give_the_whole_file_figures(tmp_path: Path, pricing, seed: int) -> None:
    rng = random.Random(seed)
    data = _ledger_bytes(rng)
    ledger = tmp_path / "ledger.jsonl"
    clock = Clock(5.0)
    chunked = LedgerBudget(ledger, 1e9, "USD", pricing, clock=clock)
    chunked.read_chunk_bytes = 64  # far shorter than most lines: every line straddles chunks
    whole = WholeFileBudget(ledger, 1e9, "USD", pricing, clock=clock)
    assert chunked.spent() == whole.spent() == 0.0  # no ledger yet
    written, compared = 0, 0
    while written < len(data):
        piece = rng.randrange(1, 4000)  # cut anywhere, mid-line included
        with open(ledger, "ab") as f:
            f.write(data[written:written + piece])
        written += piece
        clock.t += 1.0
        if rng.random() < 0.3:
            assert chunked.may_dispatch(2) == whole.may_dispatch(2)
        assert _figures(chunked, clock.t) == _figures(whole, clock.t)
        compared += 1
    assert compared > 10 and chunked._partial == b"" and chunked._finished > 0
    assert chunked.spent(clock.t) > 0


def test_a_torn_last_line_waits_for_its_end(tmp_path: Path, pricing) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(_line({"type": "run-start"}) +
                       _line({"type": "actor-load", "actor": "editor-0", "device_type": "CPU",
                              "start": 0.0, "end": 1.0}))
    budget = LedgerBudget(ledger, 100.0, "USD", pricing, clock=Clock(10.0))
    budget.read_chunk_bytes = 16
    assert budget.spent() == pytest.approx(10.0)  # held up to now
    stop = _line({"type": "actor-stop", "actor": "editor-0", "end": 4.0,
                  "padding": "p" * 100})  # several chunks long
    with open(ledger, "ab") as f:
        f.write(stop[:-1])  # all but its newline: not yet a line
    assert budget.spent() == pytest.approx(10.0)
    assert budget._partial == stop[:-1] and budget._offset == ledger.stat().st_size
    with open(ledger, "ab") as f:
        f.write(b"\n")
    assert budget.spent() == pytest.approx(4.0)  # stopped at 4 s
    assert budget._partial == b""


def test_no_read_asks_for_more_than_a_chunk(tmp_path: Path, pricing, monkeypatch) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_bytes(_ledger_bytes(random.Random(3)))
    sizes: list[int] = []

    class Recording:
        def __init__(self, f) -> None:
            self.f = f

        def read(self, n: int = -1) -> bytes:
            sizes.append(n)
            return self.f.read(n)

        def __getattr__(self, name: str):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.f.close()

    monkeypatch.setattr(jobs.budget, "open", lambda *a, **k: Recording(open(*a, **k)),
                        raising=False)
    budget = LedgerBudget(ledger, 1e9, "USD", pricing, clock=Clock(1e4))
    budget.read_chunk_bytes = 1024
    reference = WholeFileBudget(ledger, 1e9, "USD", pricing, clock=Clock(1e4))
    assert budget.spent() == pytest.approx(reference.spent())
    assert sizes and all(0 < n <= 1024 for n in sizes)
    assert len(sizes) >= ledger.stat().st_size // 1024
