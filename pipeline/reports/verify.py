"""Recompute a run's report from its ledger and compare it with the stored report.json.

Checked: (1) the figures and the notes recomputed from ledger.jsonl equal report.json's; (2) the
ledger's sha256 is the one report.json records (it was built from these bytes); (3) report.md and
report.html are what report.json renders to; (4) the ledger's outputs are bound to the store
(pipeline.reports.bindings). A report written with other prices than those resolved now
(``report --pricing FILE`` then ``report --verify`` without it, or the other way round) cannot
agree on any cost figure; that is said as such (`VerifyResult.pricing_differs`), not as a ledger
that disagrees. The run's own frozen prices (config.json "pricing") are one origin wherever the
run folder is and however RUN_DIR is spelled, so a copied or moved folder compares equal."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bindings import OutputCheck, check_outputs
from .pricing import Pricing
from .report_doc import build_report, read_stored_report
from .report_render import report_html_page, report_markdown

FROZEN_ORIGIN = "config.json (pricing)"  # resolve_run_pricing's origin of a run's frozen prices

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


def origin_label(origin: Any) -> Any:
    """An origin as compared: the run's own frozen prices are "config.json (pricing)" whatever
    folder held the run when the report was written (an absolute path then, `.` or a copy now)."""
    if isinstance(origin, str) and (origin == FROZEN_ORIGIN or origin.endswith("/" + FROZEN_ORIGIN)):
        return FROZEN_ORIGIN
    return origin


def _origin(report: dict[str, Any]) -> str | None:
    pricing = (report.get("figures") or {}).get("pricing")
    return pricing.get("origin") if isinstance(pricing, dict) else None


def _comparable_figures(report: dict[str, Any]) -> Any:
    """The figures with the pricing origin as compared (origin_label)."""
    figures = report.get("figures")
    if isinstance(figures, dict) and isinstance(figures.get("pricing"), dict) and "origin" in figures["pricing"]:
        figures = {**figures, "pricing": {**figures["pricing"], "origin": origin_label(figures["pricing"]["origin"])}}
    return figures


@dataclass(frozen=True)
class VerifyResult:
    differences: list[Difference]
    ledger_changed: bool  # the ledger's bytes differ from those the stored report was built from
    stored_sha256: str | None
    recomputed_sha256: str
    stored_pricing_origin: str | None = None  # where the stored report's prices were read from
    pricing_origin: str | None = None  # where this check's prices were read from
    renderings: list[str] = field(default_factory=list)  # report.md/.html lines that differ
    outputs: OutputCheck | None = None  # None: not checked

    @property
    def pricing_differs(self) -> bool:
        """The stored report was priced from another source than this check."""
        return origin_label(self.stored_pricing_origin) != origin_label(self.pricing_origin)

    @property
    def ok(self) -> bool:
        return not (self.differences or self.ledger_changed or self.renderings
                    or (self.outputs is not None and self.outputs.problem_count))


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


_GENERATED = {"md": re.compile(r"^_Generated (.+?); figures recomputed from ledger\.jsonl", re.M),
              "html": re.compile(r"<p><em>Generated (.+?); figures recomputed from ledger\.jsonl")}


def _first_difference(name: str, found: str, expected: str) -> str:
    found_lines, expected_lines = found.splitlines(), expected.splitlines()
    for i in range(max(len(found_lines), len(expected_lines))):
        a = found_lines[i] if i < len(found_lines) else "(end of file)"
        b = expected_lines[i] if i < len(expected_lines) else "(end of file)"
        if a != b:
            return f"{name} line {i + 1}: says {a!r}, report.json renders {b!r}"
    return f"{name}: differs from what report.json renders (line endings)"


def check_renderings(run_dir: str | Path, stored: dict[str, Any]) -> list[str]:
    """report.md and report.html against what report.json renders (at their recorded
    generation time): a figure edited in one of them is named with its line."""
    problems = []
    for ext, render in (("md", report_markdown), ("html", report_html_page)):
        path = Path(run_dir) / f"report.{ext}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"report.{ext} cannot be read ({exc}); rewrite it with `kontext-batch report RUN_DIR`")
            continue
        found = _GENERATED[ext].search(text)
        generated_at = (html.unescape(found.group(1)) if ext == "html" else found.group(1)) if found else None
        expected = render(stored, generated_at)
        if text != expected:
            problems.append(_first_difference(f"report.{ext}", text, expected))
    return problems


def verify_run(run_dir: str | Path, pricing: Pricing | None = None, *, store: str | None = None,
               outputs: str = "full") -> VerifyResult:
    """Compare the stored report's figures and notes with those recomputed from the ledger, the
    ledger's hash with the recorded one, report.md/.html with report.json, and (unless `outputs`
    is "none") the ledger's outputs with the store (`store`: where it is, if it moved)."""
    stored = read_stored_report(run_dir)
    fresh = build_report(run_dir, pricing=pricing)
    stored_sha = (stored.get("inputs") or {}).get("ledger_sha256")
    return VerifyResult(
        differences=compare(_comparable_figures(stored), _comparable_figures(fresh), "figures")
        + compare(stored.get("notes", _MISSING), fresh["notes"], "notes"),
        ledger_changed=stored_sha != fresh["inputs"]["ledger_sha256"],
        stored_sha256=stored_sha,
        recomputed_sha256=fresh["inputs"]["ledger_sha256"],
        stored_pricing_origin=_origin(stored),
        pricing_origin=_origin(fresh),
        renderings=check_renderings(run_dir, stored),
        outputs=None if outputs == "none" else check_outputs(run_dir, store=store, level=outputs),
    )
