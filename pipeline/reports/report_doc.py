"""Build, write and read a run's cost/usage report (report.json, report.md, report.html).

report.json is deterministic: the same ledger, results and prices give the same bytes. The
generation time appears only in the Markdown and HTML renderings, never in the verified figures.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .ledger import LedgerStream
from .pricing import Pricing, resolve_run_pricing
from .report_render import report_html_page, report_markdown
from .usage import COST_MODEL, Analysis, analyse_stream

# @2: busy = device-busy (model phases only); CPU phases (read, decode, file encode, commit) are
# reported apart as cpu_seconds / cpu_by_phase. An @1 report's figures used other definitions.
# @3: cost.per_generated_image (cost / generated) beside per_delivered_image (now cost /
# (generated + cache hits)); the hosted API equivalent counts generated images only.
# @4: failed_model (a model call that raised) is device-busy, so failed attempts cost their device
# time; wall time sums the invocations' own running times; cache saved uses the marginal cost
# (device-busy cost of ok attempts per generated image); retried = rows retried after a
# retry-scheduled attempt; recovered attempts bill their closed holding; notes are verified.
# @5: cost.by_product / cost.by_variant (direct cost of each group's rows, and its share of the
# total).
# @6: memory (per actor: plan, resident weight bytes, peak device bytes) and text_phase (the
# embeddings encoded or reused before the editors load, its seconds and cost); null when absent.
REPORT_SCHEMA = "kontext-batch/report@6"


def analyse_run(run_dir: str | Path, pricing: Pricing | None = None) -> Analysis:
    """Ledger-derived figures and per-row summaries of one run, in one bounded pass over
    ledger.jsonl (cache hits are counted, not expanded)."""
    run_dir = Path(run_dir)
    stream = LedgerStream.open(run_dir, expand_cache_hits=False)
    return analyse_stream(stream, pricing or resolve_run_pricing(run_dir))


def build_report(run_dir: str | Path, pricing: Pricing | None = None,
                 analysis: Analysis | None = None) -> dict[str, Any]:
    """The report object: verified `figures`, the cost model text, inputs and notes. Pass the
    run's `analysis` when it is at hand: the ledger is then not read again."""
    run_dir = Path(run_dir)
    pricing = pricing or resolve_run_pricing(run_dir)
    analysis = analysis or analyse_run(run_dir, pricing)
    return {
        "schema": REPORT_SCHEMA,
        "figures": analysis.figures,
        "cost_model": COST_MODEL,
        "inputs": {
            "ledger_sha256": analysis.ledger_sha256,
            "ledger_records": analysis.ledger_records,
            "pricing_origin": pricing.origin,
        },
        "notes": analysis.warnings,
    }


def report_json_bytes(report: dict[str, Any]) -> bytes:
    """Canonical JSON text of a report (sorted keys, fixed indent, trailing newline)."""
    text = json.dumps(report, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def atomic_write(path: Path, data: bytes) -> None:
    """Write through a temp file and rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(run_dir: str | Path, report: dict[str, Any], generated_at: str | None) -> dict[str, Path]:
    """Write report.json, report.md and report.html into the run directory."""
    run_dir = Path(run_dir)
    paths = {
        "json": run_dir / "report.json",
        "md": run_dir / "report.md",
        "html": run_dir / "report.html",
    }
    atomic_write(paths["json"], report_json_bytes(report))
    atomic_write(paths["md"], report_markdown(report, generated_at).encode("utf-8"))
    atomic_write(paths["html"], report_html_page(report, generated_at).encode("utf-8"))
    return paths


def read_stored_report(run_dir: str | Path) -> dict[str, Any]:
    """The report.json written earlier; FileNotFoundError/ValueError name the file and the fix."""
    path = Path(run_dir) / "report.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; write it first with `kontext-batch report {run_dir}`")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); rewrite it with `kontext-batch report {run_dir}`") from None
    schema = report.get("schema") if isinstance(report, dict) else None
    if isinstance(schema, str) and schema.startswith("kontext-batch/report@") and schema != REPORT_SCHEMA:
        raise ValueError(f"{path} is a {schema} report, written with other cost definitions than this "
                         f"version's {REPORT_SCHEMA}, so its figures cannot be compared; rewrite it with "
                         f"`kontext-batch report {run_dir}`")
    if schema != REPORT_SCHEMA or "figures" not in report:
        raise ValueError(f"{path} is not a {REPORT_SCHEMA} report; rewrite it with `kontext-batch report {run_dir}`")
    return report
