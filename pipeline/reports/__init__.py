"""Reporting layer: cost/usage reports, contact sheets and the review page.

Everything is derived from a run directory's ledger.jsonl (+ results.parquet, config.json), so it
can be rebuilt and audited at any time (docs/architecture.md). Modules: write_all (every report
file of a run), report_doc (report.json), report_render (its md/html), review_build (the review
page's images and heat maps), review_page, sheets, verify, command (the CLI).
"""

# Output provenance is write-path code (pipeline.provenance); re-exported for existing callers.
from pipeline.provenance import (
    ProvenanceError,
    encode_image_with_provenance,
    provenance_params,
    read_provenance,
    read_sidecar,
    sidecar_json,
)

from .changes import ReviewThresholds, thresholds_from_mapping
from .pricing import Pricing, PricingError, load_pricing, resolve_run_pricing
from .report_doc import build_report, write_report
from .rollup import rollup
from .verify import verify_run
from .write_all import RunOutputs, generate_reports

__all__ = [
    "Pricing", "PricingError", "ProvenanceError", "ReviewThresholds", "RunOutputs", "build_report",
    "encode_image_with_provenance", "generate_reports", "load_pricing", "provenance_params",
    "read_provenance", "read_sidecar", "resolve_run_pricing", "rollup", "sidecar_json",
    "thresholds_from_mapping", "verify_run", "write_report",
]
