"""manifests.iter_rows_skipping: the public row iterator a run reads a manifest with (rows
validation refused come back as SkippedRow with their raw values; the rest are built)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from manifests import ManifestError, ManifestRow, SkippedRow, iter_rows_skipping, validate_manifest
from pipeline.manifest_input import BadRow, check_manifest, iter_manifest


def _manifest(tmp_path, seeds: list[int], instructions: list[str] | None = None) -> str:
    n = len(seeds)
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({
        "image": [f"img{i}.png" for i in range(n)],
        "instruction": instructions or [f"on red {i}" for i in range(n)],
        "seed": pa.array(seeds, type=pa.int64()),
        "product_id": [f"p{i}" for i in range(n)],
    }), path)
    return str(path)


def test_skipped_rows_keep_their_place_and_raw_values(tmp_path):
    path = _manifest(tmp_path, [0, -1, 2, 3, -5, 5, 6])
    _, problems = validate_manifest(path)
    bad = {p.row for p in problems}
    assert bad == {1, 4}
    batches = list(iter_rows_skipping(path, bad, batch_rows=3))
    assert [len(b) for b in batches] == [3, 3, 1]
    rows = [r for b in batches for r in b]
    assert [r.row_index for r in rows] == list(range(7))
    assert [type(r) for r in rows] == [ManifestRow, SkippedRow, ManifestRow, ManifestRow,
                                      SkippedRow, ManifestRow, ManifestRow]
    assert rows[4].raw == {"image": "img4.png", "instruction": "on red 4", "seed": -5,
                           "product_id": "p4"}
    assert (rows[2].seed, rows[2].product_id, rows[5].image.endswith("img5.png")) == \
        (2, "p2", True)


def test_a_problem_outside_skip_names_its_manifest_row(tmp_path):
    path = _manifest(tmp_path, [0, -1, 2, 3, -5, 5, 6])
    with pytest.raises(ManifestError) as info:
        list(iter_rows_skipping(path, {1}, batch_rows=3))
    assert [(p.row, p.column) for p in info.value.problems] == [(4, "seed")]


def test_a_run_reads_bad_rows_as_bad_rows(tmp_path):
    path = _manifest(tmp_path, [0, 1, 2], instructions=["on red", "  ", "on blue"])
    rows = [r for b in iter_manifest(check_manifest(path), batch_rows=2) for r in b]
    assert [type(r) for r in rows] == [ManifestRow, BadRow, ManifestRow]
    assert rows[1].product_id == "p1" and rows[1].reason.startswith("instruction: ")
