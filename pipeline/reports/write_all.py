"""Everything `kontext-batch report RUN_DIR` writes, as one function the runner can also call."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.killpoints import kill_point

from .changes import ReviewThresholds, thresholds_from_mapping
from .decisions_view import page_decisions
from .pricing import Pricing, load_pricing, resolve_run_pricing
from .report_doc import analyse_run, build_report, write_report
from .results_columns import annotate_results
from .review_build import build_review_assets
from .review_page import write_review_page
from .rows import DEFAULT_MAX_REVIEW_ROWS, select_review_rows
from .sheets import SheetLayout


@dataclass
class RunOutputs:
    report: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)
    sheets: list[Path] = field(default_factory=list)
    review_page: Path | None = None


def run_config(run_dir: Path) -> dict[str, Any]:
    from pipeline.run_config import read_config_file

    return read_config_file(run_dir, strict=True)


def run_thresholds(run_dir: Path, overrides: Mapping[str, Any] | None = None) -> ReviewThresholds:
    """Defaults, then config.json "review_thresholds" (or "review": {"thresholds": ...}), then CLI."""
    config = run_config(run_dir)
    from_config = config.get("review_thresholds") or (config.get("review") or {}).get("thresholds")
    thresholds = thresholds_from_mapping(from_config)
    return thresholds_from_mapping({k: v for k, v in (overrides or {}).items() if v is not None}, thresholds)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def generate_reports(run_dir: str | Path, *, pricing: Pricing | str | Path | None = None,
                     thresholds: ReviewThresholds | None = None, layout: SheetLayout | None = None,
                     review: bool = True, progress: bool = True,
                     generated_at: str | None = None,
                     max_review_rows: int | None = DEFAULT_MAX_REVIEW_ROWS) -> RunOutputs:
    """Write report.{json,md,html} and, with `review`, contact sheets and review.html.

    The ledger is read once, in bounded chunks; the review covers the rows generated or failed
    in this run, at most `max_review_rows` of them (None or 0: no limit), never cache hits."""
    run_dir = Path(run_dir)
    if not isinstance(pricing, Pricing):
        pricing = load_pricing(pricing) if pricing is not None else resolve_run_pricing(run_dir)
    if max_review_rows is not None and max_review_rows < 0:
        raise ValueError(f"max_review_rows must be 0 (no limit) or more, got {max_review_rows}")
    generated_at = generated_at or utc_now()
    analysis = analyse_run(run_dir, pricing)
    report = build_report(run_dir, pricing=pricing, analysis=analysis)
    outputs = RunOutputs(report=report, files=write_report(run_dir, report, generated_at))
    kill_point("report-write")  # crash tests (pipeline.killpoints); a no-op otherwise
    costs = {row_id: summary.cost for row_id, summary in analysis.rows.items() if summary.cost}
    if not review:
        annotate_results(run_dir, costs, None)
        return outputs
    selection = select_review_rows(run_dir, analysis, max_review_rows)
    del analysis  # the per-row summaries are not needed while images are decoded
    thresholds = thresholds or run_thresholds(run_dir)
    build = build_review_assets(run_dir, selection.views, manifest=report["figures"]["run"]["manifest"],
                                currency=report["figures"]["cost"]["currency"], thresholds=thresholds,
                                layout=layout, progress=progress)
    build.notes[:0] = selection.notes
    build.scope = selection.scope
    build.decisions, build.decision_counts = page_decisions(run_dir, selection.views)
    outputs.sheets = [run_dir / p for g in build.sheets for p in g.paths]
    outputs.review_page = write_review_page(run_dir, build, report, thresholds, generated_at)
    annotate_results(run_dir, costs, {r.view.row_id: list(r.flags) for r in build.rows})
    return outputs
