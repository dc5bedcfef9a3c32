"""The budget cap of a job run: what the dispatcher asks before each batch.

Spend follows the cost report's model (pipeline.reports.usage), read from the same ledger
records: a device is paid for while an actor holds it, from its ``actor-load`` start to its
``actor-stop`` end, at the pricing file's price per device-hour for its device type. An
actor still held is charged up to now (on its node's clock: the driver's now less the least gap
between a record's ``ts`` and the actor time it carries, so a skewed node is not billed its
skew); one of an earlier, killed invocation of the same run
up to its last attempt, an ``ok`` recovered on resume included (as the report does); an attempt
of an actor already stopped adds nothing (its time is inside that holding). So ``spent`` at any moment is what the report
would say if the run stopped then, and a resumed run counts what its earlier invocations
spent.

Before a batch of ``n`` rows the cap allows it when

    spent + (rows in flight + n) x seconds per row x price per second of the held actors <= cap

where seconds per row is the wall time since this invocation's first batch divided by the
rows finished since (all actors together, so idle and I/O time are included, as in the
report). Until the first row finishes there is no estimate and only ``spent <= cap`` is
checked. Once refused, always refused: the dispatcher stops for good.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.reports.pricing import Pricing


@dataclass
class _Holding:
    start: float
    load_end: float
    price_per_s: float
    end: float | None = None
    last_attempt_end: float | None = None
    # How far the driver's clock (records' ts, and now) is ahead of the actor node's (its
    # start/end times): the least ts - time over its records. An open holding is charged up
    # to now on the node's clock, so a skewed node is not billed its skew.
    clock_ahead: float | None = None

    def close_without_stop(self) -> None:
        self.end = max(t for t in (self.last_attempt_end, self.load_end) if t is not None)

    def saw(self, ts: Any, actor_time: float) -> None:
        if isinstance(ts, int | float) and not isinstance(ts, bool):
            seen = float(ts) - actor_time
            self.clock_ahead = seen if self.clock_ahead is None else min(self.clock_ahead, seen)

    def cost(self, now: float) -> float:
        end = self.end if self.end is not None else max(now - (self.clock_ahead or 0.0),
                                                        self.start)
        return max(0.0, end - self.start) * self.price_per_s


def _first_number(*values: Any) -> float:
    """The first value that is a number (a time of 0.0 is a time, not a missing field)."""
    for value in values:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


class LedgerBudget:
    """A cap on one run's device cost, metered from its ledger (implements BudgetHook)."""

    read_chunk_bytes = 8 << 20  # the ledger is read in pieces of this size, never whole

    def __init__(self, ledger_path: str | Path, cap: float, currency: str, pricing: Pricing,
                 clock: Callable[[], float] = time.time) -> None:
        if currency != pricing.currency:
            raise ValueError(f"budget currency {currency} differs from the pricing currency "
                             f"{pricing.currency} ({pricing.origin})")
        self.path = Path(ledger_path)
        self.cap = float(cap)
        self.currency = currency
        self.pricing = pricing
        self.clock = clock
        self._offset = 0
        self._partial = b""
        self._open: dict[str, _Holding] = {}
        self._closed_cost = 0.0
        self._first_dispatch: float | None = None
        self._finished = 0  # rows finished (any non-cache-hit attempt) since that dispatch
        self._dispatched = 0
        self.refused = False
        self.last_spent = 0.0

    # -- BudgetHook -------------------------------------------------------------------------
    def may_dispatch(self, n_rows: int) -> bool:
        if self.refused:
            return False
        now = self.clock()
        self._read_new()
        spent = self.spent(now)
        projected = spent + self.estimate(n_rows, now)
        if projected > self.cap:
            self.refused = True
            return False
        if self._first_dispatch is None:
            self._first_dispatch = now
        self._dispatched += n_rows
        return True

    def status(self) -> dict[str, Any]:
        self._read_new()
        return {"spent": round(self.spent(self.clock()), 9), "cap": self.cap,
                "currency": self.currency}

    # -- figures -----------------------------------------------------------------------------
    def spent(self, now: float | None = None) -> float:
        """Device cost so far, from every ledger record written up to now."""
        self._read_new()
        now = self.clock() if now is None else now
        self.last_spent = self._closed_cost + sum(h.cost(now) for h in self._open.values())
        return self.last_spent

    def rate_per_s(self) -> float:
        return sum(h.price_per_s for h in self._open.values() if h.end is None)

    def seconds_per_row(self, now: float) -> float | None:
        if self._first_dispatch is None or self._finished == 0:
            return None
        return max(0.0, now - self._first_dispatch) / self._finished

    def estimate(self, n_rows: int, now: float) -> float:
        """Cost of finishing the rows in flight plus ``n_rows`` more (0 before any finished)."""
        self._read_new()
        per_row = self.seconds_per_row(now)
        if per_row is None:
            return 0.0
        in_flight = max(0, self._dispatched - self._finished)
        return (in_flight + n_rows) * per_row * self.rate_per_s()

    # -- ledger ------------------------------------------------------------------------------
    def _read_new(self) -> None:
        """Consume complete ledger lines written since the last call, ``read_chunk_bytes`` at
        a time (the first call of a resumed or just-planned run may find a million records)."""
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return
        with f:
            f.seek(self._offset)
            while chunk := f.read(self.read_chunk_bytes):
                self._offset += len(chunk)
                end = chunk.rfind(b"\n")
                if end < 0:  # still inside one line
                    self._partial += chunk
                    continue
                lines = (self._partial + chunk[:end]).split(b"\n")
                self._partial = chunk[end + 1:]  # an incomplete last line waits for its end
                for line in lines:
                    self._consume(line)

    def _consume(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            rec = json.loads(line)
        except ValueError:
            return
        if isinstance(rec, dict):
            self._apply(rec)

    def _apply(self, rec: dict[str, Any]) -> None:
        kind = rec.get("type")
        actor = str(rec.get("actor"))
        if kind == "run-start":
            # A new invocation: actors of the earlier one are gone (killed driver).
            for holding in self._open.values():
                if holding.end is None:
                    holding.close_without_stop()
        elif kind == "actor-load":
            previous = self._open.pop(actor, None)
            if previous is not None:
                if previous.end is None:
                    previous.close_without_stop()
                self._closed_cost += previous.cost(0.0)
            price = self.pricing.price_per_hour(str(rec.get("device_type"))) / 3600.0
            start = _first_number(rec.get("start"), rec.get("ts"), 0.0)
            holding = _Holding(start, _first_number(rec.get("end"), start), price)
            holding.saw(rec.get("ts"), holding.load_end)  # written as the load was answered
            self._open[actor] = holding
        elif kind == "actor-stop":
            holding = self._open.pop(actor, None)
            if holding is not None:
                holding.end = _first_number(rec.get("end"), rec.get("ts"), 0.0)
                self._closed_cost += holding.cost(0.0)
        elif kind == "attempt" and rec.get("outcome") != "cache-hit":
            # An attempt of a stopped actor (an ok recovered on resume carries the old actor's
            # name and times) adds nothing: its time is inside the stopped holding, as in the report.
            holding = self._open.get(actor)
            if holding is not None and rec.get("end") is not None:
                end = float(rec["end"])
                holding.last_attempt_end = max(end, holding.last_attempt_end or end)
                holding.saw(rec.get("ts"), end)
                if holding.end is not None:  # closed at a run-start (killed driver): held until
                    holding.close_without_stop()  # its last record, recovered ones included
            if self._first_dispatch is not None:
                self._finished += 1
