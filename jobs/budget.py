"""The budget cap of a job run: what the dispatcher asks before each batch.

Spend is the cost report's: the same fold (pipeline.ledger_cost, also under
pipeline.reports.usage) of the same ledger records. A device is paid for while an actor holds
it, from its ``actor-load`` start to its ``actor-stop`` end, at the pricing file's price per
device-hour for its device type. An actor still held is charged up to now (on its node's
clock: the driver's now less the least gap between a record's ``ts`` and the actor time it
carries, so a skewed node is not billed its skew); one of an earlier, killed invocation of the
same run up to its last attempt, an ``ok`` recovered on resume included; an attempt of an actor
already stopped adds nothing (its time is inside that holding). So ``spent`` at any moment is
what the report would say if the run stopped then, and a resumed run counts what its earlier
invocations spent.

The budget reads the ledger file once, when the dispatcher starts (``listen``: a resumed
date's earlier invocations, this one's run-start and plan), then the run's LedgerWriter hands it
each record it appends: the file being written is never re-read in the same process. (A budget
no writer feeds reads what was appended since its last look, in bounded chunks.)

Before a batch of ``n`` rows the cap allows it when

    spent + (rows in flight + n) x seconds per row x price per second of the held actors <= cap

where seconds per row is the wall time since this invocation's first batch divided by the
rows finished since (all actors together, so idle and I/O time are included, as in the
report). Until the first row finishes there is no estimate and only ``spent <= cap`` is
checked. Once refused, always refused: the dispatcher stops for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.ledger import parse_line
from pipeline.ledger_cost import HoldingsFold
from pipeline.reports.pricing import Pricing

if TYPE_CHECKING:
    from pipeline.ledger import LedgerWriter


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
        self._device = HoldingsFold(pricing.price_per_hour)
        self._listening = False  # fed by the run's LedgerWriter: the file is not read again
        self._heard_error: Exception | None = None  # raised by the next question, not the writer
        self._first_dispatch: float | None = None
        self._finished = 0  # rows finished (any non-cache-hit attempt) since that dispatch
        self._dispatched = 0
        self.refused = False
        self.last_spent = 0.0

    # -- BudgetHook -------------------------------------------------------------------------
    def listen(self, ledger: LedgerWriter) -> None:
        """Read what the ledger holds so far, once, then meter each record ``ledger`` appends."""
        self._read_new()
        self._listening = True
        ledger.subscribe(self._heard)

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
        self.last_spent = self._device.cost(now)
        return self.last_spent

    def rate_per_s(self) -> float:
        return self._device.rate_per_s()

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
    def _heard(self, rec: Mapping[str, Any]) -> None:
        """A record the writer made durable. An error (a device type without a price) is kept
        for the dispatcher's next question: the writer's append has already succeeded."""
        try:
            self._apply(rec)
        except Exception as exc:  # noqa: BLE001  (re-raised by _read_new)
            self._heard_error = self._heard_error or exc

    def _read_new(self) -> None:
        """Consume complete ledger lines written since the last call, ``read_chunk_bytes`` at
        a time (the first call of a resumed or just-planned run may find a million records);
        nothing once the writer feeds the budget."""
        if self._heard_error is not None:
            error, self._heard_error = self._heard_error, None
            raise error
        if self._listening:
            return
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
        rec = parse_line(line)
        if rec is not None:
            self._apply(rec)

    def _apply(self, rec: Mapping[str, Any]) -> None:
        self._device.add(rec)
        if (rec.get("type") == "attempt" and rec.get("outcome") != "cache-hit"
                and self._first_dispatch is not None):
            self._finished += 1
