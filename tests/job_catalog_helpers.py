"""Shared helpers for the jobs tests that build a manifest from a catalog: the job files."""

from __future__ import annotations

import textwrap
from pathlib import Path

from pipeline_helpers import TEST_MODEL


def write_red_job(folder: Path, name: str, extra: str = "") -> Path:
    """folder/variants.yaml (one variant, "red") and folder/job.yaml: a job named ``name`` that
    builds its manifest from folder/catalog/catalog.csv and runs tiny-random on one CPU actor;
    ``extra`` (YAML) is appended to the spec as given. Returns the spec's path."""
    (folder / "variants.yaml").write_text(
        "variants:\n  - name: red\n    instruction: put the {product} on red\n")
    spec = folder / "job.yaml"
    spec.write_text(textwrap.dedent(f"""
        name: {name}
        build:
          catalog: catalog/catalog.csv
          variants: variants.yaml
        model: {TEST_MODEL}
        output: out
        ray:
          actors: 1
          device: cpu
        """).lstrip("\n") + extra)
    return spec
