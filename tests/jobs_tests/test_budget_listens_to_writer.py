"""The jobs budget is fed by the run's LedgerWriter: it reads the ledger file once (a resumed
date's earlier invocations), then meters each record as it is appended, never re-reading the
file in the same process; its spend is the report's (one cost fold)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from budget_helpers import Clock, one_usd_per_cpu_second

import jobs.budget
from jobs.budget import LedgerBudget
from pipeline.ledger import LedgerWriter
from pipeline.reports.ledger import load_ledger
from pipeline.reports.pricing import PricingError, pricing_from_mapping
from pipeline.reports.usage import analyse


@pytest.fixture
def pricing():
    return pricing_from_mapping(one_usd_per_cpu_second())


def _count_opens(monkeypatch) -> list[str]:
    opened: list[str] = []
    real_open = open

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(jobs.budget, "open", counting, raising=False)
    return opened


def _earlier_invocation(path: Path) -> None:
    """A killed first invocation: its actor held 0..5 s (to its last attempt). Records carry
    ts = their actor time (no clock skew between the driver and the actor's node)."""
    with LedgerWriter(path, "r") as ledger:
        ledger.write("run-start", rows_total=2, ts=0.0)
        ledger.write("actor-load", actor="editor-0", device_type="CPU", start=0.0, end=1.0, ts=1.0)
        ledger.write("attempt", row_id="a", row_index=0, outcome="ok", actor="editor-0",
                     start=1.0, end=5.0, phases={"denoise": 4.0}, ts=5.0)


def test_a_listening_budget_meters_appended_records_without_reading_the_file(
        tmp_path: Path, pricing, monkeypatch) -> None:
    path = tmp_path / "ledger.jsonl"
    _earlier_invocation(path)
    clock = Clock(100.0)
    budget = LedgerBudget(path, 1e9, "USD", pricing, clock=clock)
    opened = _count_opens(monkeypatch)
    ledger = LedgerWriter(path, "r")
    ledger.write("run-start", rows_total=2, ts=80.0)
    budget.listen(ledger)
    assert opened == [str(path)]  # read once, at the start
    assert budget.spent() == pytest.approx(5.0)  # the earlier invocation's holding
    ledger.write("actor-load", actor="editor-0", device_type="CPU", start=90.0, end=91.0, ts=91.0)
    assert budget.spent() == pytest.approx(5.0 + 10.0)  # held since 90, up to now (100)
    assert budget.may_dispatch(1)
    ledger.write("attempt", row_id="b", row_index=1, outcome="ok", actor="editor-0",
                 start=91.0, end=99.0, phases={"denoise": 8.0}, ts=99.0)
    ledger.write("actor-stop", actor="editor-0", end=99.5, ts=99.5)
    clock.t = 500.0
    assert budget.spent() == pytest.approx(5.0 + 9.5)
    assert budget.status() == {"spent": 14.5, "cap": 1e9, "currency": "USD"}
    ledger.close()
    assert opened == [str(path)]  # never again, though the file grew under it
    # The report of the same ledger (one cost fold) says the same.
    report = analyse(load_ledger(tmp_path), pricing)
    assert report.figures["cost"]["total"] == pytest.approx(budget.spent())


def test_a_price_error_heard_from_the_writer_is_raised_at_the_next_question(
        tmp_path: Path, pricing) -> None:
    path = tmp_path / "ledger.jsonl"
    budget = LedgerBudget(path, 10.0, "USD", pricing, clock=Clock(10.0))
    with LedgerWriter(path, "r") as ledger:
        budget.listen(ledger)
        ledger.write("actor-load", actor="editor-0", device_type="TPU9", start=0.0, end=1.0,
                     ts=1.0)
        assert json.loads(path.read_text().splitlines()[-1])["device_type"] == "TPU9"  # written
        with pytest.raises(PricingError, match="no price for device type 'TPU9'"):
            budget.may_dispatch(1)


def test_an_unfed_budget_still_reads_what_was_appended(tmp_path: Path, pricing) -> None:
    """Without a writer (another process's ledger), the budget reads the file's new lines."""
    path = tmp_path / "ledger.jsonl"
    budget = LedgerBudget(path, 1e9, "USD", pricing, clock=Clock(50.0))
    _earlier_invocation(path)
    assert budget.spent() == pytest.approx(50.0)  # open holding: up to now
    with LedgerWriter(path, "r") as ledger:
        ledger.write("actor-stop", actor="editor-0", end=6.0, ts=6.0)
    assert budget.spent() == pytest.approx(6.0)


def test_the_dispatcher_feeds_the_budget_the_records_it_writes(
        tmp_path: Path, pricing, monkeypatch) -> None:
    from dispatch_fakes import FakeActor, FakeRay, make_tasks

    from pipeline.dispatch import ActorSlot, Dispatcher, DispatchSettings
    from pipeline.outcomes import Outcomes
    from pipeline.progress import RunProgress
    from pipeline.store import Store

    monkeypatch.setattr("pipeline.dispatch_sources.read_source_bytes",
                        lambda location, filesystems=None: b"src")
    prices = pricing.to_dict()
    prices["device_hour"]["cpu"] = 3600.0  # the fake actors' device type
    path = tmp_path / "ledger.jsonl"
    budget = LedgerBudget(path, 1e9, "USD", pricing_from_mapping(prices))
    world = FakeRay()
    world.actors = [FakeActor(f"actor-{i}", world) for i in range(2)]
    tasks = make_tasks(6)
    ledger = LedgerWriter(path, "run-t")
    ledger.write("run-start", rows_total=len(tasks))
    opened = _count_opens(monkeypatch)
    dispatcher = Dispatcher(
        slots=[ActorSlot(name=a.name, handle=a) for a in world.actors],
        store=Store(str(tmp_path / "store")), ledger=ledger, outcomes=Outcomes(len(tasks)),
        progress=RunProgress(len(tasks), disable=True),
        settings=DispatchSettings(backoff_s=0.0, batch_size=2), prior_attempts={},
        followers={}, params_for=lambda task: {},
        sidecar_for=lambda task, params, data, origin: {}, ray=world, budget=budget)
    dispatcher.run(tasks)
    ledger.close()
    assert opened == [str(path)]  # read once when the dispatcher started, then fed
    assert budget._finished == len(tasks)  # every ok attempt reached it from the writer
    assert {h.actor for h in budget._device.holdings} == {"actor-0", "actor-1"}
