"""The dispatcher's scheduling decisions, driven by scripted fake actors (no Ray, no model).

A fake Ray answers ``wait`` by finishing, per call, the oldest batch of every actor (actors
work in parallel, each on its own batches in order), so which batch went where, and when,
is deterministic and can be asserted: isolated retries reserve one actor while the others
keep working, out-of-memory shrinks only the batches of the group that ran out, and tries
spent by earlier invocations of a run count against ``max_attempts``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from dispatch_fakes import FakeActor, FakeRay, make_tasks

from pipeline.dispatch import ActorSlot, Dispatcher, DispatchSettings
from pipeline.ledger import LedgerWriter, read_ledger
from pipeline.outcomes import Outcomes
from pipeline.progress import RunProgress
from pipeline.records import Task
from pipeline.store import Store


def make_dispatcher(tmp_path: Path, world: FakeRay, n_actors: int, tasks: list[Task],
                    monkeypatch: pytest.MonkeyPatch, *, spent: dict[int, int] | None = None,
                    **settings: Any) -> tuple[Dispatcher, Outcomes, LedgerWriter]:
    # Sources are not on disk: every read returns a few bytes (a missing row is named "")
    monkeypatch.setattr("pipeline.dispatch_sources.read_source_bytes",
                        lambda location, filesystems=None: b"src")
    world.actors = [FakeActor(f"actor-{i}", world) for i in range(n_actors)]
    slots = [ActorSlot(name=a.name, handle=a) for a in world.actors]
    outcomes = Outcomes(max(t.row_index for t in tasks) + 1)
    ledger = LedgerWriter(tmp_path / "ledger.jsonl", "run-t")
    dispatcher = Dispatcher(
        slots=slots, store=Store(str(tmp_path / "store")), ledger=ledger, outcomes=outcomes,
        progress=RunProgress(len(tasks), disable=True),
        settings=DispatchSettings(backoff_s=0.0, **settings),
        prior_attempts=dict(spent or {}), spent_attempts=spent, followers={},
        params_for=lambda task: {}, sidecar_for=lambda task, params, data, origin: {},
        ray=world)
    return dispatcher, outcomes, ledger


def attempts(tmp_path: Path) -> list[dict[str, Any]]:
    return [r for r in read_ledger(tmp_path / "ledger.jsonl") if r.get("type") == "attempt"]


def test_an_isolated_retry_reserves_one_actor_while_the_others_keep_working(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay(restart_waits=50)  # the dead actor stays down until the retry is done
    world.faults["r0"] = "die"
    tasks = make_tasks(60)
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 3, tasks, monkeypatch,
                                                   batch_size=2)
    dispatcher.run(tasks)
    ledger.close()
    assert set(outcomes.status) == {"done"}
    lost_with_r0 = {r["row_id"] for r in attempts(tmp_path) if r["outcome"] == "retry-scheduled"}
    assert "r0" in lost_with_r0
    retried = [i for i, b in enumerate(world.log) if set(b["rows"]) <= lost_with_r0
               and len(b["rows"]) == 1]
    first_retry = retried[0]
    died = _death_wait(world)  # the retries are queued from then on (no backoff here)
    # Each retried row ran alone: its actor held nothing else when it got it ...
    for i in retried:
        assert world.log[i]["busy"] == 0
        actor = world.log[i]["actor"]
        # ... and got nothing else until it had finished it.
        later = [b for b in world.log[i + 1:] if b["actor"] == actor]
        assert not later or later[0]["wait"] > world.log[i]["wait"]
    # While the retry waited for its actor to drain, another actor kept receiving batches
    # (before, a retry at the head of the queue held back every batch behind it).
    between = [b for b in world.log[:first_retry] if b["wait"] >= died]
    others = {b["actor"] for b in between} - {world.log[first_retry]["actor"], "actor-0"}
    assert others, world.log[:first_retry + 1]


def _death_wait(world: FakeRay) -> int:
    """The wait at which the first actor died: its first batch held r0."""
    return next(b["wait"] for b in world.log if "r0" in b["rows"]) + 1


def test_running_out_of_memory_shrinks_only_that_groups_batches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay()
    world.faults["r0"] = "oom"
    small, large = make_tasks(12, None), make_tasks(12, (64, 64), start=12)
    tasks = small + large
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 1, tasks, monkeypatch,
                                                   batch_size=4, in_flight_per_actor=2)
    dispatcher.run(tasks)
    ledger.close()
    assert set(outcomes.status) == {"done"}
    small_ids = {t.row_id for t in small}
    oom_at = next(i for i, b in enumerate(world.log) if "r0" in b["rows"])
    # batches of the group that ran out, sent after the out-of-memory was seen: half size
    seen_after = [b for b in world.log if b["wait"] > world.log[oom_at]["wait"]]
    after_small = [b["rows"] for b in seen_after if set(b["rows"]) <= small_ids]
    assert after_small and max(map(len, after_small)) <= 2
    # the other group's batches keep the full size
    large_batches = [b["rows"] for b in world.log if not set(b["rows"]) & small_ids]
    assert [len(rows) for rows in large_batches] == [4, 4, 4]
    assert dispatcher.cap_for(small[0].group) == 2
    assert dispatcher.cap_for(large[0].group) == 4


def test_tries_of_earlier_invocations_count_against_max_attempts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay()
    world.faults.update({"r0": "transient", "r1": "transient"})
    tasks = make_tasks(2)
    # r0 had two tries in an earlier invocation (of 3), r1 none
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 1, tasks, monkeypatch,
                                                   spent={0: 2}, max_attempts=3, batch_size=1)
    dispatcher.run(tasks)
    ledger.close()
    by_row: dict[str, list[tuple[int, str]]] = {}
    for r in attempts(tmp_path):
        by_row.setdefault(r["row_id"], []).append((r["attempt"], r["outcome"]))
    assert by_row["r0"] == [(3, "failed-permanent")]
    assert by_row["r1"] == [(1, "retry-scheduled"), (2, "retry-scheduled"),
                            (3, "failed-permanent")]
    assert outcomes.status == ["failed", "failed"]


def test_sources_are_read_for_a_batch_with_each_rows_own_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay()
    images = tmp_path / "images"
    images.mkdir()
    tasks = make_tasks(4)
    for t in tasks:
        t.image = str(images / f"{t.row_id}.png")
        if t.row_id != "r2":
            Path(t.image).write_bytes(f"bytes of {t.row_id}".encode())
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 1, tasks, monkeypatch,
                                                   batch_size=4)
    monkeypatch.undo()  # the real reader, reading the batch's four files concurrently
    sent: list[dict[str, Any]] = []
    world.actors[0].enqueue = lambda ref, a=world.actors[0], orig=FakeActor.enqueue: (
        sent.extend(ref.payload["rows"]) if ref.kind == "edit_batch" else None,
        orig(a, ref))[1]
    dispatcher.run(tasks)
    ledger.close()
    assert [(r["row_id"], r["image_bytes"]) for r in sent] == [
        ("r0", b"bytes of r0"), ("r1", b"bytes of r1"), ("r3", b"bytes of r3")]
    assert outcomes.status == ["done", "done", "failed", "done"]
    failed = [r for r in attempts(tmp_path) if r["outcome"] == "failed-permanent"]
    assert [r["row_id"] for r in failed] == ["r2"] and "r2.png" in failed[0]["error"]
    assert failed[0]["error_class"] == "bad-row"


def test_an_actor_still_loading_when_the_work_ran_out_is_recorded_at_stop(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay()
    tasks = make_tasks(2)
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 2, tasks, monkeypatch)
    world.actors[1].down_for = 20  # loading the model the whole time actor-0 does the work
    dispatcher.run(tasks)
    dispatcher.stop_actors(timeout_s=10)
    ledger.close()
    assert set(outcomes.status) == {"done"}
    records = [r for r in read_ledger(tmp_path / "ledger.jsonl")
               if r["type"] in ("actor-load", "actor-stop")]
    assert [(r["type"], r["actor"]) for r in records if r["actor"] == "actor-1"] == [
        ("actor-load", "actor-1"), ("actor-stop", "actor-1")]  # its held time is billed
    assert [r["type"] for r in records if r["actor"] == "actor-0"] == ["actor-load", "actor-stop"]


def test_a_lost_batch_is_timed_on_its_actors_clock(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay()
    world.faults["r4"] = "die"
    tasks = make_tasks(8)
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 1, tasks, monkeypatch,
                                                   batch_size=2)
    world.actors[0].skew = -600.0  # the actor's node runs ten minutes behind the driver
    before = time.time()
    dispatcher.run(tasks)
    ledger.close()
    assert set(outcomes.status) == {"done"}
    records = attempts(tmp_path)
    lost = [r for r in records if r["outcome"] == "retry-scheduled"]
    assert lost and "died" in lost[0]["error"]
    # every time of that actor, the lost batch's included, is on the node's clock (the
    # report closes the actor's holding with them; mixed clocks would bill the skew)
    for r in records:
        assert before - 600.0 - 1.0 <= r["start"] <= r["end"] <= time.time() - 600.0 + 1.0, r


def test_a_batch_queued_behind_a_dying_one_is_sent_again_without_an_attempt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay(restart_waits=2)
    world.faults["r0"] = "die"
    tasks = make_tasks(4)
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 1, tasks, monkeypatch,
                                                   batch_size=2, in_flight_per_actor=2,
                                                   max_attempts=1)
    dispatcher.run(tasks)
    ledger.close()
    # both batches were on the actor when it died; only [r0, r1] had started
    assert [b["rows"] for b in world.log[:2]] == [["r0", "r1"], ["r2", "r3"]]
    by_row: dict[str, list[tuple[int, str]]] = {}
    for r in attempts(tmp_path):
        by_row.setdefault(r["row_id"], []).append((r["attempt"], r["outcome"]))
    assert by_row["r0"] == by_row["r1"] == [(1, "failed-permanent")]
    assert by_row["r2"] == by_row["r3"] == [(1, "ok")]  # not charged: sent again, done
    assert outcomes.status == ["failed", "failed", "done", "done"]
    failed = [r for r in attempts(tmp_path) if r["outcome"] == "failed-permanent"]
    # no retry happens with --max-attempts 1: the reason does not promise one
    assert all("died mid-batch" in r["error"] and "retried" not in r["error"] for r in failed)


def test_a_batch_that_kills_its_actor_before_its_model_call_is_charged_once_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeRay()
    world.faults["r2"] = "die-early"  # never marked as started: the first loss is free
    tasks = make_tasks(4)
    dispatcher, outcomes, ledger = make_dispatcher(tmp_path, world, 1, tasks, monkeypatch,
                                                   batch_size=2, max_attempts=2)
    dispatcher.run(tasks)
    ledger.close()
    by_row: dict[str, list[tuple[int, str]]] = {}
    for r in attempts(tmp_path):
        by_row.setdefault(r["row_id"], []).append((r["attempt"], r["outcome"]))
    # lost once uncharged, then alone in the actor: that death is the batch's own
    assert [b["rows"] for b in world.log if "r2" in b["rows"]] == [["r2", "r3"], ["r2", "r3"],
                                                                   ["r2"]]
    assert by_row["r2"] == [(1, "retry-scheduled"), (2, "failed-permanent")]
    assert by_row["r3"] == [(1, "retry-scheduled"), (2, "ok")]
    assert outcomes.status == ["done", "done", "failed", "done"]
