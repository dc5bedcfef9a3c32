"""The one cost fold of a ledger: which actor held which device, from when to when.

The report (pipeline.reports.usage) and the jobs budget (jobs.budget) both feed it records in
ledger order and price what it holds; the budget asks for the cost up to now while the run goes
on, the report closes every holding when the ledger ends (its cost model is printed there):

* an ``actor-load`` opens a holding (from its ``start``; its load ends at its ``end``); a
  second one for the same actor (a restart) closes the previous holding without a stop;
* an ``actor-stop`` closes the actor's open holding at its ``end``;
* a ``text-phase`` record is a whole holding of the text encoder actor (load_start to stop);
* a ``run-start`` (a new driver invocation) closes the holdings of the one before without a
  stop: their actors are gone with their driver;
* a holding closed without a stop ends at its last attempt (or its load end): an attempt
  billed to it later (an ``ok`` recovered on resume) moves that end on;
* an attempt is billed to the holding of its actor that was held when it ran (see
  ``_holding_of``); one by an actor with no holding opens an implicit one from its start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.ledger_schema import seconds_value


@dataclass
class Holding:
    """One actor's hold on one device, from model load to stop (or death)."""

    actor: str
    node: str | None
    device: str | None
    device_type: str
    start: float
    load_end: float
    price_per_s: float = 0.0
    pid: Any = None  # the actor process (None when the ledger does not say)
    end: float | None = None
    end_source: str = ""
    busy: float = 0.0  # device-busy: model phases (the report's sums)
    cpu: float = 0.0  # CPU work, overlapped with the model
    attempts: int = 0
    last_attempt_end: float | None = None
    implicit: bool = False  # no actor-load record seen: charged from its first attempt
    # How far the driver's clock (records' ts, and now) is ahead of the actor node's (its
    # start/end times): the least ts - time over its records. An open holding is charged up
    # to now on the node's clock, so a skewed node is not billed its skew.
    clock_ahead: float | None = None

    @property
    def stopped(self) -> bool:
        """Closed by its actor-stop (its end is known, not inferred from its records)."""
        return self.end_source == "actor-stop"

    def same_process(self, pid: Any) -> bool:
        """Whether an attempt stamped with `pid` may be this holding's (unknown pids match)."""
        return pid is None or self.pid is None or str(pid) == str(self.pid)

    def close_without_stop(self) -> None:
        candidates = [t for t in (self.last_attempt_end, self.load_end) if t is not None]
        self.end = max(candidates)
        self.end_source = "last-attempt" if self.last_attempt_end is not None and self.end == self.last_attempt_end else "load-end"

    def saw(self, ts: Any, actor_time: float) -> None:
        if isinstance(ts, int | float) and not isinstance(ts, bool):
            seen = float(ts) - actor_time
            self.clock_ahead = seen if self.clock_ahead is None else min(self.clock_ahead, seen)

    def held_seconds(self, now: float | None = None) -> float:
        """Held so far: to its end, or (open) to ``now`` on its node's clock (0 without now)."""
        if self.end is not None:
            end = self.end
        elif now is not None:
            end = max(now - (self.clock_ahead or 0.0), self.start)
        else:
            end = self.start
        return max(0.0, end - self.start)


def _time(value: Any) -> float | None:
    return None if isinstance(value, bool) or not isinstance(value, int | float) else float(value)


class HoldingsFold:
    """Device holdings of one run, built one ledger record at a time.

    ``price_per_hour(device_type)`` prices a holding as it opens (the report passes one that
    defers an unknown device type's error to the end of its read). ``warnings`` name records
    that do not fit (by their "_line" when the reader gave one)."""

    def __init__(self, price_per_hour: Callable[[str], float]) -> None:
        self.price_per_hour = price_per_hour
        self.open: dict[str, Holding] = {}
        self.closed: dict[str, list[Holding]] = {}
        self.holdings: list[Holding] = []
        self.warnings: list[str] = []

    def add(self, rec: Mapping[str, Any]) -> Holding | None:
        """Fold one record; for a worked attempt (not a cache hit), the holding it is billed to."""
        kind = rec.get("type")
        if kind == "attempt":
            return None if rec.get("outcome") == "cache-hit" else self._attempt(rec)
        if kind == "run-start":
            for holding in self.open.values():  # a new invocation: the earlier one's actors are gone
                if holding.end is None:
                    holding.close_without_stop()
        elif kind == "actor-load":
            self._load(rec)
        elif kind == "actor-stop":
            self._stop(rec)
        elif kind == "text-phase" and rec.get("actor") is not None:
            self._text_phase(rec)
        return None

    # -- figures -----------------------------------------------------------------------------
    def cost(self, now: float | None = None) -> float:
        """Device cost so far: every holding's held time x its price (open ones up to ``now``)."""
        return sum(h.held_seconds(now) * h.price_per_s for h in self.holdings)

    def rate_per_s(self) -> float:
        """Price per second of the holdings still held."""
        return sum(h.price_per_s for h in self.open.values() if h.end is None)

    def close_open(self) -> None:
        """The ledger ended: what is still open ends at its last record."""
        for holding in self.open.values():
            holding.close_without_stop()

    # -- records -----------------------------------------------------------------------------
    def _new(self, rec: Mapping[str, Any], start: float, load_end: float, **kw: Any) -> Holding:
        holding = Holding(
            actor=str(rec.get("actor")), node=rec.get("node"), device=rec.get("device"),
            device_type=str(rec.get("device_type")), start=start, load_end=load_end,
            pid=rec.get("pid"), **kw)
        holding.price_per_s = self.price_per_hour(holding.device_type) / 3600.0
        self.open[holding.actor] = holding
        self.holdings.append(holding)
        return holding

    def _load(self, rec: Mapping[str, Any]) -> None:
        previous = self.open.pop(str(rec.get("actor")), None)
        if previous is not None:
            previous.close_without_stop()
            self.closed.setdefault(previous.actor, []).append(previous)
        holding = self._new(rec, seconds_value(rec.get("start")), seconds_value(rec.get("end")))
        holding.saw(rec.get("ts"), holding.load_end)  # written as the load was answered

    def _text_phase(self, rec: Mapping[str, Any]) -> None:
        """The text encoder actor's whole hold, in one record (pipeline.text_phase)."""
        holding = self._new(rec, seconds_value(rec.get("load_start")), seconds_value(rec.get("load_end")))
        del self.open[holding.actor]
        holding.end, holding.end_source = seconds_value(rec.get("stop")), "actor-stop"
        self.closed.setdefault(holding.actor, []).append(holding)

    def _stop(self, rec: Mapping[str, Any]) -> None:
        actor = rec.get("actor")
        holding = self.open.pop(str(actor), None)
        if holding is None:
            self.warnings.append(f"ledger line {rec.get('_line')}: actor-stop for actor {actor!r} "
                                 "without an open actor-load; ignored")
            return
        holding.end = seconds_value(rec.get("end"))
        holding.end_source = "actor-stop"
        self.closed.setdefault(holding.actor, []).append(holding)

    def _attempt(self, rec: Mapping[str, Any]) -> Holding | None:
        actor = rec.get("actor")
        holding = self._holding_of(rec)
        if holding is None and actor is not None:
            holding = self._new(rec, seconds_value(rec.get("start")),
                                seconds_value(rec.get("start")), implicit=True)
            self.warnings.append(
                f"ledger line {rec.get('_line')}: attempt by actor {actor!r} with no actor-load "
                "before it; charged from this attempt's start with no load time")
        if holding is None:
            return None
        end = seconds_value(rec.get("end"))
        holding.last_attempt_end = end if holding.last_attempt_end is None else max(holding.last_attempt_end, end)
        if _time(rec.get("end")) is not None:
            holding.saw(rec.get("ts"), end)
        if holding.end is not None and not holding.stopped:
            holding.close_without_stop()  # closed without a stop: its last record moved on
        return holding

    def _holding_of(self, rec: Mapping[str, Any]) -> Holding | None:
        """The holding an attempt ran in: its actor's open one, unless the attempt is of an
        instance that has already closed (a recovered ok written on resume with the old actor's
        name and times, or an attempt ending before a closed holding's end). None: no holding
        open (the caller opens an implicit one)."""
        actor, pid = rec.get("actor"), rec.get("pid")
        if actor is None:
            return None
        current = self.open.get(str(actor))
        recovered = rec.get("recovered") is True
        end = _time(rec.get("end"))
        if current is not None and current.same_process(pid) and not (
                recovered and end is not None and end < current.start):
            return current
        for closed in reversed(self.closed.get(str(actor), [])):
            if end is None or not closed.same_process(pid) or end < closed.start:
                continue
            if end <= (closed.end or closed.start) or recovered:
                return closed
        return current
