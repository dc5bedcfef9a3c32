"""Shared helpers for the budget tests: a settable clock and prices with easy arithmetic."""

from __future__ import annotations

from typing import Any


class Clock:
    """A clock that reads ``t`` until a test moves it (the budget's ``clock=`` argument)."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def one_usd_per_cpu_second() -> dict[str, Any]:
    """The shipped price table with a CPU actor at 1 USD per actor-second."""
    from pipeline.reports.pricing import load_pricing

    prices = load_pricing().to_dict()
    prices["device_hour"]["CPU"] = 3600.0
    return prices
