"""Reporting layer: cost/usage reports, contact sheets, review page and output provenance.

Everything is derived from a run directory's ledger.jsonl (+ results.parquet, config.json), so it
can be rebuilt and audited at any time (docs/architecture.md).
"""

from .changes import ReviewThresholds, thresholds_from_mapping
from .generate import RunOutputs, generate_reports
from .pricing import Pricing, PricingError, load_pricing, resolve_run_pricing
from .provenance import (
    ProvenanceError,
    encode_image_with_provenance,
    provenance_params,
    read_provenance,
    read_sidecar,
    sidecar_json,
)
from .report import build_report, write_report
from .rollup import rollup
from .verify import verify_run

__all__ = [
    "Pricing", "PricingError", "ProvenanceError", "ReviewThresholds", "RunOutputs", "build_report",
    "encode_image_with_provenance", "generate_reports", "load_pricing", "provenance_params",
    "read_provenance", "read_sidecar", "resolve_run_pricing", "rollup", "sidecar_json",
    "thresholds_from_mapping", "verify_run", "write_report",
]
