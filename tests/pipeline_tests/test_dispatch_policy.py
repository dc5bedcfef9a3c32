"""The dispatcher's pure parts, without Ray or actors: the scheduling policy's decisions and
the batch protocol's dataclasses (the actor class itself answers a request built from them)."""

from __future__ import annotations

import hashlib
import io
from types import SimpleNamespace
from typing import Any

from PIL import Image

from pipeline.actors import EditorActor
from pipeline.dispatch_policy import Batch, SchedulingPolicy
from pipeline.dispatch_pool import ActorSlot
from pipeline.dispatch_protocol import TRUNCATED_NOTE, BatchRequest, BatchResult, RowRequest
from pipeline.records import Task


def _tasks(n: int, size: tuple[int, int] | None = None, start: int = 0) -> list[Task]:
    return [Task(row_index=i, row_id=f"r{i}", image="", image_sha256="0" * 64,
                 instruction="edit", seed=i, steps=4, guidance=2.5, size=size,
                 output_format="png", ext="png", key=f"{i:064x}")
            for i in range(start, start + n)]


def _policy(budget: Any = None, **kw: Any) -> SchedulingPolicy:
    settings = {"batch_size": 2, "in_flight_per_actor": 2, "backoff_s": 0.0,
                "backoff_max_s": 0.0, **kw}
    return SchedulingPolicy(budget=budget, **settings)


def _slots(n: int) -> list[ActorSlot]:
    return [ActorSlot(name=f"a{i}", handle=None, ready=True) for i in range(n)]


def _hand_out(policy: SchedulingPolicy, slots: list[ActorSlot]) -> list[tuple[str, list[str]]]:
    """What the dispatcher would submit now (each submission counted on its actor)."""
    sent = []
    for slot, batch in policy.assignments(slots):
        slot.in_flight += 1
        slot.exclusive = batch.isolate
        sent.append((slot.name, [t.row_id for t in batch.tasks]))
    return sent


def test_each_actor_gets_up_to_its_in_flight_limit_least_loaded_first() -> None:
    policy, slots = _policy(), _slots(2)
    policy.add(_tasks(10))
    assert _hand_out(policy, slots) == [("a0", ["r0", "r1"]), ("a1", ["r2", "r3"]),
                                        ("a0", ["r4", "r5"]), ("a1", ["r6", "r7"])]
    assert _hand_out(policy, slots) == []  # both full: the rest waits
    slots[1].in_flight -= 1
    assert _hand_out(policy, slots) == [("a1", ["r8", "r9"])]


def test_an_isolated_batch_waits_for_a_drained_reserved_actor_alone() -> None:
    policy, slots = _policy(), _slots(2)
    policy.add(_tasks(12))
    _hand_out(policy, slots)  # each actor holds two batches
    policy.requeue_front(Batch(_tasks(1, start=90), isolate=True))
    slots[0].in_flight = slots[1].in_flight = 1  # one batch each finished
    # a0 is reserved for the isolated row: it gets nothing new, while a1 works on
    assert _hand_out(policy, slots) == [("a1", ["r8", "r9"])]
    assert [s.reserved for s in slots] == [True, False]
    slots[0].in_flight = 0  # drained
    assert _hand_out(policy, slots) == [("a0", ["r90"])]
    assert slots[0].exclusive and not slots[0].usable  # nothing shares its process
    slots[1].in_flight = 0
    assert _hand_out(policy, slots) == [("a1", ["r10", "r11"])]


def test_out_of_memory_halves_only_that_groups_batches() -> None:
    policy, slots = _policy(batch_size=4, in_flight_per_actor=8), _slots(1)
    small, large = _tasks(4), _tasks(8, size=(64, 64), start=4)
    retry = policy.shrink(small[0].group, small, batch_rows=4)
    assert [[t.row_id for t in rows] for rows in retry] == [["r0", "r1"], ["r2", "r3"]]
    policy.add(_tasks(4, start=20) + large)
    assert [rows for _, rows in _hand_out(policy, slots)] == [
        ["r20", "r21"], ["r22", "r23"], ["r4", "r5", "r6", "r7"], ["r8", "r9", "r10", "r11"]]


def test_the_first_budget_refusal_stops_handing_out_and_everything_left_is_dropped() -> None:
    class Budget:
        def __init__(self) -> None:
            self.left = 3

        def may_dispatch(self, n_rows: int) -> bool:
            ok = n_rows <= self.left
            self.left -= n_rows if ok else 0
            return ok

        def status(self) -> dict[str, Any]:
            return {}

    policy, slots = _policy(budget=Budget(), in_flight_per_actor=4), _slots(1)
    policy.add(_tasks(6))
    assert _hand_out(policy, slots) == [("a0", ["r0", "r1"])]  # 2 more rows would pass 3
    assert policy.stopped
    policy.retry_later(_tasks(1, start=50), tries=1)
    assert _hand_out(policy, slots) == []  # stopped for good
    assert sorted(t.row_id for b in policy.drop_all() for t in b.tasks) == [
        "r2", "r3", "r4", "r5", "r50"]
    assert not policy.pending


def test_a_result_field_this_driver_does_not_know_is_kept() -> None:
    wire = {"actor": {"actor": "a0", "pid": 1}, "rows": [
        {"row_index": 3, "key": "k", "ok": True, "start": 1.0, "end": 2.0, "phases": {},
         "data": b"x", "truncated": True, "notes": ["EXIF orientation 6 applied"],
         "future_flag": 7}]}
    result = BatchResult.from_wire(wire)
    row = result.rows[0]
    assert row.extra == {"future_flag": 7} and result.latest_end == 2.0
    assert row.row_notes() == f"EXIF orientation 6 applied; {TRUNCATED_NOTE}"


class _Recolour:
    """An editor that returns each source recoloured (no model): enough for the protocol."""

    def edit(self, *, images: list[Any], instructions: list[str], seeds: list[int],
             **_: Any) -> Any:
        return SimpleNamespace(images=[Image.new("RGB", im.size, (0, 0, s)) for im, s in
                                       zip(images, seeds, strict=True)],
                               timings={"denoise": 0.5}, truncated=[False] * len(images))


def test_the_actor_answers_a_request_built_from_the_dataclasses() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, format="PNG")
    data = buf.getvalue()
    request = BatchRequest(
        rows=[RowRequest(row_index=i, row_id=f"r{i}", key=f"{i:064x}", instruction="edit",
                         seed=i, image_bytes=data, image_sha256=hashlib.sha256(data).hexdigest(),
                         output_format="png", params={}) for i in (4, 5)],
        steps=2, guidance=2.5, size=None, max_pixels=10_000, step_cache=None, batch_id=7)
    actor = EditorActor("editor-0", "scripted", "cpu", "float32",
                        editor_factory=lambda *args, **kwargs: _Recolour())
    result = BatchResult.from_wire(actor.edit_batch(request.to_wire()))
    assert result.actor["actor"] == "editor-0"
    assert [(r.row_index, r.ok) for r in result.rows] == [(4, True), (5, True)]
    decoded = [Image.open(io.BytesIO(r.data or b"")).getpixel((0, 0)) for r in result.rows]
    assert decoded == [(0, 0, 4), (0, 0, 5)]
    assert all(r.phases["denoise"] == 0.25 and r.start <= r.end for r in result.rows)
