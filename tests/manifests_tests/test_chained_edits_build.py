"""Chained edits (#21) in the builder: a variant's `steps` list becomes a chain of rows, each
step on the previous step's output; the final step keeps the plain row id and variant name."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pipeline_helpers import write_images

from manifests.build import build_manifest, stable_row_id, variant_seed
from manifests.problems import BuildError
from manifests.validate import chain_graph

VARIANTS = """\
variants:
  - name: shadow
    guidance: 3.0
    steps:
      - remove the background behind the {product}
      - instruction: relight the {product} with {light}
        guidance: 4.5
      - add a soft shadow under the {product}
    light: warm light
  - name: red
    instruction: place the {product} on red
"""


def _build(tmp_path: Path, variants: str, seeds: int = 1) -> list[dict]:
    write_images(tmp_path / "catalog", 2)
    (tmp_path / "variants.yaml").write_text(variants)
    out = tmp_path / "manifest.parquet"
    build_manifest(tmp_path / "catalog", tmp_path / "variants.yaml", seeds, out=out, warn=None)
    return pq.read_table(out).to_pylist()


def test_steps_list_becomes_a_chain_of_rows(tmp_path):
    rows = _build(tmp_path, VARIANTS, seeds=2)
    assert len(rows) == 2 * (3 + 1) * 2
    by_id = {r["row_id"]: r for r in rows}
    final = stable_row_id("product_0", "shadow", 1)
    assert by_id[final]["image"] == f"row:{final}--step2"
    assert by_id[f"{final}--step2"]["image"] == f"row:{final}--step1"
    assert by_id[f"{final}--step1"]["image"] == "catalog/product_0.png"
    assert by_id[f"{final}--step2"]["instruction"] == "relight the product 0 with warm light"
    assert [by_id[i]["guidance"] for i in (f"{final}--step1", f"{final}--step2", final)] == \
        [3.0, 4.5, 3.0]
    assert by_id[final]["variant"] == "shadow"
    assert by_id[f"{final}--step1"]["variant"] == "shadow-step1"
    # the final step keeps a plain variant's seed (and row id): adding steps keeps its name
    assert by_id[final]["seed"] == variant_seed("product_0", "shadow", 1)
    assert by_id[stable_row_id("product_1", "red", 0)]["image"] == "catalog/product_1.png"
    graph = chain_graph(tmp_path / "manifest.parquet")
    assert len(graph.parent) == 2 * 2 * 2 and graph.problems == []


@pytest.mark.parametrize("entry, phrase", [
    ("    instruction: x\n    steps: [a, b]\n", "either instruction or a steps list"),
    ("    steps: []\n", "steps is an empty list"),
    ("    steps: [a, {guidance: 3}]\n", "step 2: no instruction"),
    ("    steps: [a, {instruction: b, colour: red}]\n", "step 2: unknown setting 'colour'"),
    ("    steps: [a, 'b {nope}']\n", "uses field {nope}"),
])
def test_bad_steps_are_named(tmp_path, entry, phrase):
    with pytest.raises(BuildError) as err:
        _build(tmp_path, "variants:\n  - name: v\n" + entry)
    assert phrase in str(err.value)
