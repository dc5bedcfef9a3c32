"""A stand-in for Ray under the dispatcher: fake actors that run their calls when the test says,
a fake ``ray`` module (wait/get/kill, remote classes), and task builders. Shared by the dispatcher's
scheduling tests and the budget's writer-feed test."""

from __future__ import annotations

import itertools
import time
from collections import deque
from typing import Any

from pipeline.records import Task


class ActorDied(Exception):
    """Stands in for ray.exceptions.RayActorError."""


class _Exceptions:
    RayActorError = ActorDied


class Ref:
    _ids = itertools.count()

    def __init__(self, actor: FakeActor, kind: str, payload: Any = None) -> None:
        self.id = next(self._ids)
        self.actor, self.kind, self.payload = actor, kind, payload
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False

    def __hash__(self) -> int:
        return self.id


class _Method:
    def __init__(self, actor: FakeActor, kind: str) -> None:
        self.actor, self.kind = actor, kind

    def remote(self, payload: Any = None) -> Ref:
        return self.actor.enqueue(Ref(self.actor, self.kind, payload))


class FakeActor:
    """Runs its batches in order, one per ``wait``; faults are scripted per row id:
    ``"oom"`` (that row runs out of memory, once), ``"die"`` (the process dies in the model
    call, once) or ``"die-early"`` (it dies before the model call, every time)."""

    def __init__(self, name: str, world: FakeRay) -> None:
        self.name, self.world = name, world
        self.pid = 100
        self.queue: deque[Ref] = deque()
        self.down_for = 0  # waits until a restarted process answers again
        self.skew = 0.0  # this actor's node clock minus the driver's
        self.describe = _Method(self, "describe")
        self.edit_batch = _Method(self, "edit_batch")
        self.stop = _Method(self, "stop")

    def info(self) -> dict[str, Any]:
        return {"actor": self.name, "pid": self.pid, "node": "n1", "device": "cpu",
                "device_type": "cpu"}

    def enqueue(self, ref: Ref) -> Ref:
        if ref.kind == "edit_batch":
            rows = [r["row_id"] for r in ref.payload["rows"]]
            self.world.log.append({"actor": self.name, "rows": rows,
                                   "busy": sum(q.kind == "edit_batch" for q in self.queue),
                                   "wait": self.world.waits})
        self.queue.append(ref)
        return ref

    def die(self, ref: Ref) -> None:
        ref.error = ActorDied("the actor died unexpectedly")
        for queued in self.queue:  # the process is gone: so is everything it held
            queued.done, queued.error = True, ActorDied("the actor died unexpectedly")
        self.queue.clear()
        self.pid += 1
        self.down_for = self.world.restart_waits

    def step(self) -> None:
        if self.down_for:
            self.down_for -= 1
            return
        if not self.queue:
            return
        ref = self.queue.popleft()
        ref.done = True
        now = time.time() + self.skew
        if ref.kind in ("describe", "stop"):
            ref.result = {**self.info(), "load_start": now - 1.0, "load_end": now, "end": now}
            return
        rows = ref.payload["rows"]
        marks = ref.payload.get("marks")
        faults = self.world.faults
        if any(faults.get(r["row_id"]) == "die-early" for r in rows):
            self.die(ref)  # before its model call (decoding, say): never marked; every time
            return
        if marks is not None:  # this batch now starts its model call (the real actor marks it)
            marks.mark.remote(self.name, ref.payload["batch_id"])
        if any(faults.get(r["row_id"]) == "die" for r in rows):
            for r in rows:
                faults.pop(r["row_id"], None) if faults.get(r["row_id"]) == "die" else None
            self.die(ref)
            return
        results = []
        for r in rows:
            base = {"row_index": r["row_index"], "key": r["key"], "phases": {"denoise": 0.1},
                    "start": now - 0.01, "end": now, "truncated": False, "notes": []}
            if faults.get(r["row_id"]) == "oom":
                faults.pop(r["row_id"])
                results.append({**base, "ok": False, "oom": True, "error_class": "transient",
                                "error": "CUDA out of memory", "data": None})
            elif faults.get(r["row_id"]) == "transient":
                results.append({**base, "ok": False, "oom": False, "error_class": "transient",
                                "error": "injected transient", "data": None})
            else:
                results.append({**base, "ok": True, "oom": False, "error_class": None,
                                "error": None, "data": f"png of {r['row_id']}".encode()})
        ref.result = {"actor": self.info(), "rows": results}


class _Done(Ref):
    """A call answered at once (the start-marks tracker runs in no fake actor's queue)."""

    def __init__(self, result: Any) -> None:
        self.id = next(Ref._ids)
        self.result, self.error, self.done = result, None, True


class _LocalHandle:
    """``handle.method.remote(...)`` on a plain object, answered at once."""

    def __init__(self, obj: Any) -> None:
        self._obj = obj

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._obj, name)
        return type("M", (), {"remote": staticmethod(lambda *a: _Done(method(*a)))})()


class _LocalClass:
    def __init__(self, cls: type) -> None:
        self.cls = cls

    def options(self, **_: Any) -> _LocalClass:
        return self

    def remote(self, *args: Any) -> _LocalHandle:
        return _LocalHandle(self.cls(*args))


class FakeRay:
    exceptions = _Exceptions

    @staticmethod
    def remote(cls: type) -> _LocalClass:
        return _LocalClass(cls)

    def __init__(self, restart_waits: int = 0) -> None:
        self.actors: list[FakeActor] = []
        self.faults: dict[str, str] = {}
        self.log: list[dict[str, Any]] = []
        self.waits = 0
        self.restart_waits = restart_waits

    def wait(self, refs: list[Ref], num_returns: int = 1, timeout: float | None = None):
        if timeout != 0:  # the blocking wait: time passes, every actor does one thing
            self.waits += 1
            for actor in self.actors:
                actor.step()
        if timeout is not None and timeout > 1 and num_returns == len(refs):
            for _ in range(200):  # stop_actors' long wait for everyone: let them all answer
                if all(r.done for r in refs):
                    break
                for actor in self.actors:
                    actor.step()
        ready = [r for r in refs if r.done]
        return ready, [r for r in refs if not r.done]

    def get(self, ref: Ref, timeout: float | None = None) -> Any:
        if ref.error is not None:
            raise ref.error
        return ref.result

    def kill(self, handle: Any, no_restart: bool = True) -> None:
        pass


def make_tasks(n: int, size: tuple[int, int] | None = None, start: int = 0,
               image: str = "") -> list[Task]:
    return [Task(row_index=i, row_id=f"r{i}", image=image, image_sha256="0" * 64,
                 instruction="edit", seed=i, steps=4, guidance=2.5, size=size,
                 output_format="png", ext="png", key=f"{i:064x}")
            for i in range(start, start + n)]
