"""Manifests: the Parquet table of (image, instruction, seed) rows a batch run works through.

Public API (stable; see docs/architecture.md):

- ``validate_manifest(path, ...) -> (rows_total, problems)``: stream the file, report every problem.
- ``iter_rows(path, ...)``: stream validated ``ManifestRow`` batches.
- ``iter_rows_skipping(path, skip, ...)``: the same, with the rows in ``skip`` (the ones
  validation refused) as ``SkippedRow`` (index and raw values) instead of stopping there.
- ``read_manifest_schema(path)``: the Arrow schema, from the footer only.
- ``build_manifest(catalog, variants, seeds_per_variant, out)``: catalog × variants × seeds;
  returns a ``BuildResult`` (the row count as an int, plus ``.warnings`` for bad products,
  which do not stop the build).
- ``Problem``, ``ManifestError`` (``.problems``), ``BuildError``.

Path resolution for image references lives in ``manifests.paths`` (the pipeline reuses it).
"""

from .build import BuildResult, build_manifest
from .problems import BuildError, ManifestError, Problem
from .schema import ManifestRow, read_manifest_schema
from .validate import SkippedRow, derive_row_id, iter_rows, iter_rows_skipping, validate_manifest

__all__ = [
    "BuildError",
    "BuildResult",
    "ManifestError",
    "ManifestRow",
    "Problem",
    "SkippedRow",
    "build_manifest",
    "derive_row_id",
    "iter_rows",
    "iter_rows_skipping",
    "read_manifest_schema",
    "validate_manifest",
]
