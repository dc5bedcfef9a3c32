"""Recompute a run's report from its ledger and compare it with the stored report.json.

Compared: the figures and the notes. A report written with other prices than those resolved now
(``report --pricing FILE`` then ``report --verify`` without it, or the other way round) cannot
agree on any cost figure; that is said as such (`VerifyResult.pricing_differs`), not as a ledger
that disagrees."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pricing import Pricing
from .report import build_report, read_stored_report

_MISSING = object()


@dataclass(frozen=True)
class Difference:
    path: str  # e.g. "figures.time.busy_by_phase.denoise"
    stored: Any
    recomputed: Any

    def __str__(self) -> str:
        def show(v: Any) -> str:
            return "(absent)" if v is _MISSING else repr(v)
        return f"{self.path}: stored {show(self.stored)}, recomputed from ledger {show(self.recomputed)}"


def _origin(report: dict[str, Any]) -> str | None:
    pricing = (report.get("figures") or {}).get("pricing")
    return pricing.get("origin") if isinstance(pricing, dict) else None


@dataclass(frozen=True)
class VerifyResult:
    differences: list[Difference]
    ledger_changed: bool  # the ledger's bytes differ from those the stored report was built from
    stored_sha256: str | None
    recomputed_sha256: str
    stored_pricing_origin: str | None = None  # where the stored report's prices were read from
    pricing_origin: str | None = None  # where this check's prices were read from

    @property
    def pricing_differs(self) -> bool:
        """The stored report was priced from another source than this check."""
        return self.stored_pricing_origin != self.pricing_origin

    @property
    def ok(self) -> bool:
        return not self.differences


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-15)
    return a == b


def compare(stored: Any, recomputed: Any, path: str) -> list[Difference]:
    """Every leaf where two JSON values differ, named by its dotted path ([i] for list items)."""
    if isinstance(stored, dict) and isinstance(recomputed, dict):
        out: list[Difference] = []
        for key in sorted(set(stored) | set(recomputed), key=str):
            out += compare(stored.get(key, _MISSING), recomputed.get(key, _MISSING), f"{path}.{key}")
        return out
    if isinstance(stored, list) and isinstance(recomputed, list):
        out = []
        for i in range(max(len(stored), len(recomputed))):
            a = stored[i] if i < len(stored) else _MISSING
            b = recomputed[i] if i < len(recomputed) else _MISSING
            out += compare(a, b, f"{path}[{i}]")
        return out
    if stored is _MISSING or recomputed is _MISSING or not _same(stored, recomputed):
        return [Difference(path, stored, recomputed)]
    return []


def verify_run(run_dir: str | Path, pricing: Pricing | None = None) -> VerifyResult:
    """Compare the stored report's figures and notes with those recomputed from the ledger."""
    stored = read_stored_report(run_dir)
    fresh = build_report(run_dir, pricing=pricing)
    stored_sha = (stored.get("inputs") or {}).get("ledger_sha256")
    return VerifyResult(
        differences=compare(stored["figures"], fresh["figures"], "figures")
        + compare(stored.get("notes", _MISSING), fresh["notes"], "notes"),
        ledger_changed=stored_sha != fresh["inputs"]["ledger_sha256"],
        stored_sha256=stored_sha,
        recomputed_sha256=fresh["inputs"]["ledger_sha256"],
        stored_pricing_origin=_origin(stored),
        pricing_origin=_origin(fresh),
    )
