"""The driver's view of its actors: which are up, restarting or gone, and what they said.

- A batch goes only to an actor that answered a ``describe`` probe since it (re)started, so
  its ``actor-load`` record always precedes its attempts and a restarting actor gets nothing;
  a restarting actor is probed until it answers, and given up after ``restart_timeout_s``.
- An actor whose creation failed (the model did not load, no node fits it) is dead for the
  run; when none is left the run stops (``RunAborted``), naming each reason.
- Clock offsets: each node's clock is learned from the times its answers carry, so the
  driver's own times of a lost batch can be put on that node's clock.
- The start-marks tracker (pipeline.dispatch_marks) says whether a lost batch had started.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.dispatch_marks import had_started, start_marks
from pipeline.ledger import LedgerWriter


class RunAborted(Exception):
    """No actor can run the model (every one failed to load it); the message says why."""


@dataclass
class ActorSlot:
    name: str
    handle: Any
    in_flight: int = 0
    alive: bool = True  # False: can never come back (model failed to load, gave up waiting)
    # Batches go only to an actor that answered a probe since it (re)started.
    ready: bool = False
    waiting_since: float = field(default_factory=time.time)
    probe_at: float | None = None  # when to ask a restarting actor again whether it is up
    node: str | None = None
    death: str | None = None
    exclusive: bool = False  # running an isolated batch: nothing else may share the process
    reserved: bool = False  # draining for an isolated batch: gets no other batches
    info: dict[str, Any] = field(default_factory=dict)  # last describe(): actor, pid, node...

    @property
    def usable(self) -> bool:
        return self.alive and self.ready and not self.exclusive


class ActorPool:
    """Probes, restarts and records of the run's actor slots."""

    def __init__(self, ray: Any, slots: list[ActorSlot], ledger: LedgerWriter,
                 restart_timeout_s: float) -> None:
        self._ray = ray
        self.slots = slots
        self.ledger = ledger
        self.restart_timeout_s = restart_timeout_s
        self.describing: dict[Any, ActorSlot] = {}  # probe ref -> slot
        self.seen_instances: set[tuple[str, int]] = set()
        self.clock_ahead: dict[str, float] = {}  # node -> driver clock minus that node's
        self.marks: Any = None

    def start(self) -> None:
        """Probe every actor (answered once its model has loaded); start the tracker."""
        for slot in self.slots:
            self.describing[slot.handle.describe.remote()] = slot
        self.marks = start_marks(self._ray)

    def check_alive(self) -> None:
        if not any(s.alive for s in self.slots):
            reasons = sorted({s.death for s in self.slots if s.death})
            raise RunAborted("no actor could load the model: " + (" | ".join(reasons) or "unknown")
                             + "\nFix: check --model, --device and that every node can read the weights")

    def probe_times(self) -> list[float]:
        return [s.probe_at for s in self.slots if s.probe_at is not None]

    # -- probes -----------------------------------------------------------------------------
    def described(self, ref: Any) -> None:
        """A readiness probe returned: the actor is up (again), or still restarting."""
        slot = self.describing.pop(ref)
        try:
            info = self._ray.get(ref)
        except Exception as exc:
            if not self.actor_failed(slot, exc):
                self.pause(slot, probe_in=0.5)
            return
        slot.ready, slot.probe_at = True, None
        self.note_actor(info, slot)
        # A probe sent at start is answered as soon as the model has loaded.
        self.learn_clock(slot.node, info.get("load_end"))

    def pause(self, slot: ActorSlot, probe_in: float = 0.0) -> None:
        """Stop sending batches to a restarting actor; probe it until it answers."""
        now = time.time()
        if slot.ready:
            slot.ready, slot.waiting_since = False, now
        if slot not in self.describing.values():
            slot.probe_at = now + probe_in

    def probe_restarting(self) -> None:
        now = time.time()
        for slot in self.slots:
            if not slot.alive or slot.ready:
                continue
            if now - slot.waiting_since > self.restart_timeout_s:
                slot.alive = False
                slot.death = (f"{slot.name} was not up within "
                              f"{self.restart_timeout_s:.0f} s (model load or restart)")
            elif slot.probe_at is not None and slot.probe_at <= now:
                slot.probe_at = None
                self.describing[slot.handle.describe.remote()] = slot

    def actor_failed(self, slot: ActorSlot, exc: BaseException) -> bool:
        """Marks a slot dead when its actor can never come back; True if so."""
        text = str(exc)
        if "creation task" in text or "max_restarts" in text or \
                type(exc).__name__ == "ActorUnschedulableError":
            slot.alive = False
            slot.death = _first_lines(text)
            return True
        return False

    def had_started(self, slot: ActorSlot, batch_id: int) -> bool:
        return had_started(self._ray, self.marks, slot.name, batch_id)

    # -- what actors said -------------------------------------------------------------------
    def note_actor(self, info: Mapping[str, Any], slot: ActorSlot) -> None:
        slot.node = info.get("node")
        slot.info = dict(info)
        self.ledger.append(self._load_records(info))

    def _load_records(self, info: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The actor-load record of an actor process not seen before (else none)."""
        instance = (str(info["actor"]), int(info.get("pid") or 0))
        if instance in self.seen_instances:
            return []
        self.seen_instances.add(instance)
        return [self.ledger.record(
            "actor-load", actor=info["actor"], pid=info.get("pid"), node=info.get("node"),
            node_ip=info.get("node_ip"), device=info.get("device"),
            device_type=info.get("device_type"), start=info.get("load_start"),
            end=info.get("load_end"),
            **({"memory": dict(info["memory"])} if isinstance(info.get("memory"), Mapping) else {}))]

    def learn_clock(self, node: str | None, actor_time: float | None) -> None:
        """How far the driver's clock is ahead of ``node``'s: an answer stamped ``actor_time``
        there arrived now, so the smallest difference seen is the offset plus the least
        latency."""
        if node is None or not actor_time:
            return
        seen = time.time() - float(actor_time)
        self.clock_ahead[node] = min(seen, self.clock_ahead.get(node, seen))

    def shift(self, slot: ActorSlot) -> float:
        """Driver clock minus ``slot``'s node clock (0 until learned)."""
        return self.clock_ahead.get(slot.node or "", 0.0)

    # -- the end ----------------------------------------------------------------------------
    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask live actors for their stop time (actor-stop records), then end them."""
        ray = self._ray
        refs = {slot.handle.stop.remote(): slot for slot in self.slots if slot.alive}
        records = []
        if refs:
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
            for ref in ready:
                try:
                    info = ray.get(ref)
                except Exception:
                    continue
                # An actor still loading when the work ran out never answered its probe:
                # its load record comes now, so the report bills the device time it held.
                records += self._load_records(info)
                records.append(self.ledger.record(
                    "actor-stop", actor=info["actor"], pid=info.get("pid"),
                    node=info.get("node"), end=info["end"]))
        self.ledger.append(records)
        for handle in [slot.handle for slot in self.slots] + [self.marks] * (self.marks is not None):
            try:
                ray.kill(handle, no_restart=True)
            except Exception:
                pass


_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _first_lines(text: str, n: int = 3) -> str:
    """Why an actor died: the exception its __init__ raised (the last `XError: message` line of
    Ray's traceback text) when there is one, else the text's first lines."""
    lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip() and "^^^" not in ln]
    raised = [ln for ln in lines if _RAISED.match(ln)]
    if raised:
        return raised[-1][:600]
    return " ".join(lines[:n])[:400]
