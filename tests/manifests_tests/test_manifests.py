"""Manifest validation, streaming iteration and image path safety (manifests package)."""

from __future__ import annotations

import hashlib
import json
import os

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manifests import (
    ManifestError,
    ManifestRow,
    Problem,
    derive_row_id,
    iter_rows,
    read_manifest_schema,
    validate_manifest,
)
from manifests.__main__ import main as cli_main
from manifests.paths import ImageRefError, ImageResolver, is_within
from manifests.seen import SeenHashes


def write(folder, columns: dict | pa.Table, name: str = "manifest.parquet", **kwargs) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    table = columns if isinstance(columns, pa.Table) else pa.table(columns)
    pq.write_table(table, path, **kwargs)
    return path


def good_columns(n: int = 3) -> dict:
    return {
        "image": [f"img{i}.png" for i in range(n)],
        "instruction": [f"put it on red {i}" for i in range(n)],
        "seed": list(range(n)),
    }


def problems_of(path, **kwargs) -> list[tuple[int | None, str | None, str]]:
    _, problems = validate_manifest(path, **kwargs)
    return [(p.row, p.column, p.reason) for p in problems]


def only_problem(path, **kwargs) -> Problem:
    _, problems = validate_manifest(path, **kwargs)
    assert len(problems) == 1, problems
    return problems[0]


def all_rows(path, **kwargs) -> list[ManifestRow]:
    return [row for batch in iter_rows(path, **kwargs) for row in batch]


# ----------------------------------------------------------------------------- valid manifests


def test_valid_manifest_has_no_problems_and_rows_are_normalised(tmp_path):
    path = write(
        tmp_path,
        {
            "image": ["a.png", "sub/../b.png", "s3://bucket/c.png"],
            "instruction": ["  put it on red  ", "studio white", "marble"],
            "seed": pa.array([0, 7, 2**63 - 1], pa.int64()),
            "row_id": ["r0", None, "r2"],
            "product_id": ["p1", "p1", None],
            "variant": ["red", "white", "marble"],
            "width": [512, None, 1024],
            "height": [512.0, None, 4096.0],  # pandas-style float column with gaps
            "steps": [1, 200, None],
            "guidance": [0, 20.0, 3.5],
            "output_format": ["JPG", " png ", None],
            "meta_category": ["mugs", "mugs", None],
            "meta_attrs": [{"colour": "blue"}, None, {"colour": "red"}],
        },
    )
    assert validate_manifest(path) == (3, [])
    rows = all_rows(path)
    assert [r.row_index for r in rows] == [0, 1, 2]
    first, second, third = rows
    assert first.row_id == "r0" and third.row_id == "r2"
    assert first.image == str(tmp_path / "a.png")
    assert second.image == str(tmp_path / "b.png")
    assert third.image == "s3://bucket/c.png"
    assert first.instruction == "put it on red"
    assert (first.width, first.height, first.steps, first.guidance) == (512, 512, 1, 0.0)
    assert isinstance(first.height, int) and isinstance(first.guidance, float)
    assert (first.output_format, second.output_format, third.output_format) == ("jpeg", "png", None)
    assert third.seed == 2**63 - 1
    assert third.product_id is None and third.width == 1024 and third.height == 4096
    assert first.meta == {"meta_category": "mugs", "meta_attrs": {"colour": "blue"}}
    assert second.meta == {"meta_category": "mugs", "meta_attrs": None}


def test_row_id_is_derived_from_content_when_absent(tmp_path):
    path = write(tmp_path, {"image": ["a.png"], "instruction": [" make it red "], "seed": [5]})
    (row,) = all_rows(path)
    payload = json.dumps(["a.png", "make it red", 5], separators=(",", ":"))
    assert row.row_id == hashlib.sha256(payload.encode()).hexdigest()[:16]
    assert row.row_id == derive_row_id("a.png", "make it red", 5)
    # Derived from the reference as written, so it survives moving the manifest's folder.
    moved = write(
        tmp_path / "elsewhere", {"image": ["a.png"], "instruction": ["make it red"], "seed": [5]}
    )
    assert all_rows(moved)[0].row_id == row.row_id


def test_integer_row_and_product_ids_become_text(tmp_path):
    path = write(tmp_path, {**good_columns(2), "row_id": [10, 11], "product_id": [7, 8]})
    rows = all_rows(path)
    assert [(r.row_id, r.product_id) for r in rows] == [("10", "7"), ("11", "8")]


def test_dictionary_encoded_text_columns_are_accepted(tmp_path):
    table = pa.table(good_columns(4)).append_column(
        "variant", pa.array(["red", "red", "blue", "red"]).dictionary_encode()
    )
    path = write(tmp_path, table)
    assert validate_manifest(path) == (4, [])
    assert [r.variant for r in all_rows(path)] == ["red", "red", "blue", "red"]


def test_nulls_in_optional_columns_are_fine(tmp_path):
    nulls = [None, None]
    path = write(
        tmp_path,
        {
            **good_columns(2),
            "row_id": pa.array(nulls, pa.string()),
            "product_id": nulls,  # null-typed column
            "width": pa.array(nulls, pa.int64()),
            "guidance": pa.array(nulls, pa.float64()),
            "output_format": pa.array(nulls, pa.string()),
        },
    )
    assert validate_manifest(path) == (2, [])
    assert all(r.product_id is None and r.width is None for r in all_rows(path))


def test_pandas_index_column_is_not_an_unknown_column(tmp_path):
    df = pd.DataFrame(good_columns(4))
    path = os.path.join(tmp_path, "m.parquet")
    df.index = [10, 3, 7, 1]  # not a range: pandas stores it as a column, __index_level_0__
    df.to_parquet(path)
    assert "__index_level_0__" in read_manifest_schema(path).names
    assert validate_manifest(path) == (4, [])
    assert [r.row_index for r in all_rows(path)] == [0, 1, 2, 3]


def test_read_manifest_schema_reads_the_footer(tmp_path):
    path = write(tmp_path, {**good_columns(), "meta_x": [1, 2, 3]})
    schema = read_manifest_schema(path)
    assert schema.names == ["image", "instruction", "seed", "meta_x"]
    assert schema.field("seed").type == pa.int64()


# ----------------------------------------------------------------------------- whole-file problems


def test_missing_required_columns_are_each_named(tmp_path):
    path = write(tmp_path, {"image": ["a.png"]})
    found = problems_of(path)
    assert [(row, col) for row, col, _ in found] == [(None, "instruction"), (None, "seed")]
    assert "missing required column 'instruction'" in found[0][2]
    assert "missing required column 'seed'" in found[1][2]


def test_unknown_column_suggests_the_close_name_and_lists_allowed(tmp_path):
    cols = good_columns()
    cols["instrucion"] = cols.pop("instruction")
    found = problems_of(write(tmp_path, cols))
    unknown = [p for p in found if p[1] == "instrucion"]
    assert len(unknown) == 1
    reason = unknown[0][2]
    assert "unknown column 'instrucion' (did you mean 'instruction'?)" in reason
    assert "allowed columns: image, instruction, seed, row_id" in reason and "meta_*" in reason
    assert (None, "instruction") in [(r, c) for r, c, _ in found]  # and it is missing


def test_unknown_column_without_close_match_has_no_suggestion(tmp_path):
    p = only_problem(write(tmp_path, {**good_columns(), "colour": ["r", "g", "b"]}))
    assert (p.row, p.column) == (None, "colour")
    assert "did you mean" not in p.reason and "prefix it with 'meta_'" in p.reason


def test_seed_as_string_column_is_mistyped(tmp_path):
    p = only_problem(write(tmp_path, {**good_columns(), "seed": ["1", "2", "3"]}))
    assert (p.row, p.column) == (None, "seed")
    assert p.reason.startswith("column 'seed' has type string, but seed must be an integer")


def test_float_seeds_are_refused_even_when_whole(tmp_path):
    p = only_problem(write(tmp_path, {**good_columns(), "seed": [1.0, 2.0, 3.0]}))
    assert (p.row, p.column) == (None, "seed")
    assert p.reason.startswith("seed must be an integer")
    assert "double" in p.reason


@pytest.mark.parametrize(
    ("column", "values", "expected"),
    [
        (
            "instruction",
            [1, 2, 3],
            "column 'instruction' has type int64, but instruction must be text",
        ),
        ("image", [True, False, True], "column 'image' has type bool, but image must be text"),
        (
            "width",
            ["512", "512", "512"],
            "column 'width' has type string, but width must be an integer",
        ),
        (
            "guidance",
            ["3", "3", "3"],
            "column 'guidance' has type string, but guidance must be a number",
        ),
        ("row_id", [1.5, 2.5, 3.5], "column 'row_id' has type double, but row_id must be text"),
    ],
)
def test_mistyped_columns(tmp_path, column, values, expected):
    p = only_problem(write(tmp_path, {**good_columns(), column: values}))
    assert (p.row, p.column) == (None, column)
    assert p.reason.startswith(expected)


def test_required_column_with_only_nulls(tmp_path):
    p = only_problem(write(tmp_path, {**good_columns(), "image": [None, None, None]}))
    assert (p.row, p.column) == (None, "image")
    assert "has no values (every row is null)" in p.reason


def test_repeated_column_name(tmp_path):
    table = pa.Table.from_arrays(
        [pa.array(["a.png"]), pa.array(["x"]), pa.array([1]), pa.array([2])],
        names=["image", "instruction", "seed", "seed"],
    )
    found = problems_of(write(tmp_path, table))
    assert (None, "seed", "column 'seed' appears 2 times; keep exactly one") in found


def test_empty_manifest_is_a_problem(tmp_path):
    schema = pa.schema([("image", pa.string()), ("instruction", pa.string()), ("seed", pa.int64())])
    path = write(tmp_path, schema.empty_table())
    assert validate_manifest(path) == (
        0,
        [
            Problem(
                None,
                None,
                f"manifest {path!r} has no rows; add at least one (image, instruction, seed) row",
            )
        ],
    )
    with pytest.raises(ManifestError, match="has no rows"):
        iter_rows(path)


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    path = tmp_path / "catalog.csv"
    path.write_text("image,instruction,seed\na.png,x,1\n")
    rows, problems = validate_manifest(path)
    assert rows == 0 and len(problems) == 1
    assert problems[0].reason.startswith(f"{str(path)!r} is not a Parquet file")
    with pytest.raises(ManifestError, match="is not a Parquet file") as err:
        iter_rows(path)
    assert str(path) in str(err.value)
    with pytest.raises(ManifestError, match="is not a Parquet file"):
        read_manifest_schema(path)
    (tmp_path / "empty.parquet").write_bytes(b"")
    assert "is not a Parquet file" in only_problem(tmp_path / "empty.parquet").reason


def test_missing_file_and_folder_are_reported(tmp_path):
    missing = tmp_path / "nope.parquet"
    assert (
        only_problem(missing).reason == f"manifest file not found: {str(missing)!r}; check the path"
    )
    assert "is a folder" in only_problem(tmp_path).reason


# ----------------------------------------------------------------------------- row problems


def test_negative_seed_problem_text(tmp_path):
    path = write(tmp_path, {**good_columns(13), "seed": [*range(12), -3]})
    p = only_problem(path)
    assert str(p) == "row 12, column 'seed': seed must be ≥ 0 (got -3)"


def test_seed_must_be_below_two_to_the_63(tmp_path):
    seeds = pa.array([2**63 - 1, 2**63, 2**64 - 1], pa.uint64())
    found = problems_of(write(tmp_path, {**good_columns(), "seed": seeds}))
    assert found == [
        (1, "seed", f"seed must be < 2**63 (got {2**63})"),
        (2, "seed", f"seed must be < 2**63 (got {2**64 - 1})"),
    ]


def test_null_seed_and_null_image(tmp_path):
    found = problems_of(
        write(tmp_path, {**good_columns(2), "seed": [1, None], "image": [None, "b.png"]})
    )
    assert [(r, c) for r, c, _ in found] == [(0, "image"), (1, "seed")]
    assert found[0][2].startswith("image is missing (null)")
    assert found[1][2].startswith("seed is missing (null)")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_or_whitespace_instruction(tmp_path, text):
    p = only_problem(write(tmp_path, {**good_columns(1), "instruction": [text]}))
    assert (p.row, p.column) == (0, "instruction")
    assert p.reason.startswith("instruction is empty or only whitespace")


def test_null_instruction(tmp_path):
    p = only_problem(write(tmp_path, {**good_columns(2), "instruction": ["x", None]}))
    assert (p.row, p.column) == (1, "instruction") and "instruction is missing (null)" in p.reason


@pytest.mark.parametrize(
    ("column", "values", "bad_rows", "expected"),
    [
        (
            "width",
            [16, 4096, 500, 0, -16, 4112],
            [2, 3, 4, 5],
            "width must be a positive multiple of 16 and at most 4096",
        ),
        ("height", [512.0, 512.5, 1024, 8, 64, 32], [1, 3], None),
        ("steps", [1, 200, 0, 201, 28, 50], [2, 3], "steps must be between 1 and 200"),
        ("guidance", [0, 20, -0.1, 20.5, float("nan"), 3.5], [2, 3, 4], None),
        (
            "output_format",
            ["png", "JPEG", "gif", "jpg", "Webp", "tiff"],
            [2, 5],
            "output_format must be one of png, jpeg, webp",
        ),
        ("row_id", ["a", "", "b", "  ", "c", "d"], [1, 3], "row_id is empty"),
    ],
)
def test_optional_column_ranges(tmp_path, column, values, bad_rows, expected):
    found = problems_of(write(tmp_path, {**good_columns(6), column: values}))
    assert [(r, c) for r, c, _ in found] == [(r, column) for r in bad_rows]
    if expected:
        assert all(reason.startswith(expected) for _, _, reason in found)


def test_range_problem_texts_name_the_value(tmp_path):
    cols = {**good_columns(3), "height": [512.5, 8, 64], "guidance": [float("nan"), 25.0, 1.0]}
    found = problems_of(write(tmp_path, cols))
    assert found == [
        (0, "height", "height must be an integer (got 512.5)"),
        (0, "guidance", "guidance must be a finite number (got nan)"),
        (
            1,
            "height",
            "height must be a positive multiple of 16 and at most 4096 (got 8); leave it null to keep the model's size policy",
        ),
        (1, "guidance", "guidance must be between 0 and 20 (got 25.0)"),
    ]


def test_every_problem_is_reported_with_row_and_column(tmp_path):
    cols = good_columns(8)
    cols["seed"][1] = -1  # 1
    cols["instruction"][3] = "   "  # 2
    cols["image"][4] = "../../etc/passwd"  # 3
    cols["steps"] = [28, 28, 28, 28, 28, 28, 0, 28]  # 4
    cols["image"][7] = "http://example.com/x.png"  # 5
    found = problems_of(write(tmp_path, cols))
    assert [(r, c) for r, c, _ in found] == [
        (1, "seed"),
        (3, "instruction"),
        (4, "image"),
        (6, "steps"),
        (7, "image"),
    ]


def test_problems_of_one_row_keep_column_order(tmp_path):
    cols = {**good_columns(1), "seed": [-1], "instruction": [""], "width": [3], "image": [""]}
    found = problems_of(write(tmp_path, cols))
    assert [c for _, c, _ in found] == ["image", "instruction", "seed", "width"]


# ----------------------------------------------------------------------------- duplicates


def test_duplicate_row_ids_across_batch_boundaries(tmp_path):
    ids = ["a", "b", "c", "d", "a", "e", "f", "b"]
    path = write(tmp_path, {**good_columns(8), "row_id": ids})
    found = problems_of(path, batch_rows=3)
    assert found == [
        (
            4,
            "row_id",
            "row_id 'a' is already used by row 0; row ids must be unique across the whole manifest",
        ),
        (
            7,
            "row_id",
            "row_id 'b' is already used by row 1; row ids must be unique across the whole manifest",
        ),
    ]
    batches = iter_rows(path, batch_rows=3)
    assert [r.row_id for r in next(batches)] == ["a", "b", "c"]
    with pytest.raises(ManifestError) as err:
        next(batches)
    assert [(p.row, p.column) for p in err.value.problems] == [(4, "row_id")]
    assert "row_id 'a' is already used by an earlier row" in str(err.value)


def test_repeated_content_rows_collide_on_the_derived_row_id(tmp_path):
    cols = {
        "image": ["a.png", "b.png", "a.png"],
        "instruction": ["x", "x", " x "],
        "seed": [1, 1, 1],
    }
    p = only_problem(write(tmp_path, cols), batch_rows=2)
    assert (p.row, p.column) == (2, None)
    assert p.reason.startswith("this row repeats row 0: same image, instruction and seed")


def test_invalid_given_row_id_does_not_fall_back_to_a_derived_one(tmp_path):
    cols = {
        **good_columns(2),
        "image": ["a.png", "a.png"],
        "seed": [1, 1],
        "instruction": ["x", "x"],
    }
    cols["row_id"] = ["", "r1"]
    found = problems_of(write(tmp_path, cols))
    assert [(r, c) for r, c, _ in found] == [(0, "row_id")]


def test_hash_collisions_are_not_reported_as_duplicates(tmp_path, monkeypatch):
    import manifests.validate

    monkeypatch.setattr(manifests.validate, "hash64", lambda text: 42)  # everything collides
    path = write(tmp_path, {**good_columns(5), "row_id": ["a", "b", "c", "a", "d"]})
    assert problems_of(path, batch_rows=2) == [
        (
            3,
            "row_id",
            "row_id 'a' is already used by row 0; row ids must be unique across the whole manifest",
        ),
    ]


@settings(database=None, max_examples=60, deadline=None)
@given(batches=st.lists(st.lists(st.integers(0, 40), max_size=12), max_size=25))
def test_seen_hashes_matches_a_python_set(batches):
    seen, reference = SeenHashes(), set()
    for batch in batches:
        expected = []
        for value in batch:
            expected.append(value in reference)
            reference.add(value)
        assert seen.add(batch).tolist() == expected
    assert len(seen) == len(reference)
    assert seen.add([2**64 - 1, 0]).tolist() == [False, 0 in reference]


# ----------------------------------------------------------------------------- streaming


def test_iteration_streams_every_row_in_bounded_batches(tmp_path):
    n = 1000
    path = write(tmp_path, {**good_columns(n), "meta_n": list(range(n))}, row_group_size=128)
    assert pq.ParquetFile(path).metadata.num_row_groups == 8
    batches = list(iter_rows(path, batch_rows=64))
    assert all(0 < len(b) <= 64 for b in batches)
    rows = [r for b in batches for r in b]
    assert [r.row_index for r in rows] == list(range(n))
    assert [r.meta["meta_n"] for r in rows] == list(range(n))
    assert validate_manifest(path, batch_rows=64) == (n, [])


def test_batch_rows_must_be_positive(tmp_path):
    path = write(tmp_path, good_columns())
    with pytest.raises(ValueError, match="batch_rows must be a positive integer"):
        validate_manifest(path, batch_rows=0)


def test_schema_problems_raise_at_the_iter_rows_call(tmp_path):
    path = write(tmp_path, {"image": ["a.png"], "seed": [1]})
    with pytest.raises(ManifestError, match="missing required column 'instruction'"):
        iter_rows(path)  # no next() needed


def test_max_problems_summarises_the_rest(tmp_path):
    path = write(tmp_path, {**good_columns(20), "seed": [-1] * 20})
    rows, problems = validate_manifest(path, max_problems=5)
    assert rows == 20 and len(problems) == 6
    assert [p.row for p in problems[:5]] == [0, 1, 2, 3, 4]
    assert problems[5].reason.startswith("15 more problems not listed")


# ----------------------------------------------------------------------------- errors and text


def test_problem_str_forms():
    assert str(Problem(None, None, "whole file")) == "whole file"
    assert str(Problem(None, "seed", "bad")) == "column 'seed': bad"
    assert str(Problem(3, None, "bad")) == "row 3: bad"


def test_manifest_error_lists_all_and_truncates_after_50():
    problems = [Problem(i, "seed", f"bad {i}") for i in range(60)]
    err = ManifestError(problems, "m.parquet")
    text = str(err)
    lines = text.splitlines()
    assert lines[0] == "manifest 'm.parquet' has 60 problems:"
    assert lines[1] == "  - row 0, column 'seed': bad 0"
    assert lines[50] == "  - row 49, column 'seed': bad 49"
    assert lines[51] == "  ... and 10 more problems not listed"
    assert len(lines) == 52 and err.problems == problems
    assert str(ManifestError("just this")) == "manifest has 1 problem:\n  - just this"


# ----------------------------------------------------------------------------- image paths


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path):
    folder = tmp_path / "runs" / "m"
    path = write(
        folder, {**good_columns(3), "image": ["imgs/a.png", "./imgs/../imgs/b.png", "c.png"]}
    )
    assert [r.image for r in all_rows(path)] == [
        str(folder / "imgs" / "a.png"),
        str(folder / "imgs" / "b.png"),
        str(folder / "c.png"),
    ]


def test_paths_escaping_the_manifest_folder_are_refused(tmp_path):
    folder = tmp_path / "m"
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"x")
    refs = [
        "../outside/x.png",
        str(outside / "x.png"),
        "../m/ok.png",
        "/etc/passwd",
        "a/../../x.png",
    ]
    path = write(folder, {**good_columns(5), "image": refs})
    found = problems_of(path)
    assert [(r, c) for r, c, _ in found] == [(0, "image"), (1, "image"), (3, "image"), (4, "image")]
    assert found[0][2] == (
        f"image '../outside/x.png' resolves to {str(outside / 'x.png')!r}, outside the manifest's "
        f"folder {str(folder)!r}; move the image there, or allow its folder explicitly with image_roots"
    )
    assert "resolves to '/etc/passwd', outside the manifest's folder" in found[2][2]
    # An explicitly allowed root makes the first two fine, and only those.
    found = problems_of(path, image_roots=[str(outside)])
    assert [r for r, _, _ in found] == [3, 4]
    assert "outside the allowed roots" in found[0][2]


def test_symlink_pointing_outside_is_refused_unless_its_target_root_is_allowed(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    secret = tmp_path / "private" / "secret.png"
    secret.parent.mkdir()
    secret.write_bytes(b"x")
    (folder / "inside.png").write_bytes(b"x")
    (folder / "link_out.png").symlink_to(secret)
    (folder / "link_in.png").symlink_to(folder / "inside.png")
    (folder / "linked_dir").symlink_to(secret.parent, target_is_directory=True)
    refs = ["link_out.png", "link_in.png", "linked_dir/secret.png"]
    path = write(folder, {**good_columns(3), "image": refs})
    found = problems_of(path, check_images_exist=True)
    assert [(r, c) for r, c, _ in found] == [(0, "image"), (2, "image")]
    assert found[0][2].startswith(
        f"image 'link_out.png' is a symlink (or lies in a linked folder) that resolves to {str(secret)!r}"
    )
    assert problems_of(path, image_roots=[str(secret.parent)], check_images_exist=True) == []
    # The path handed to the pipeline is the one inside the manifest's folder.
    assert all_rows(path, image_roots=[str(secret.parent)])[0].image == str(folder / "link_out.png")


def test_manifest_folder_reached_through_a_symlink_is_its_own_root(tmp_path):
    real = tmp_path / "real"
    path = write(real, {**good_columns(1), "image": ["a.png"]})
    (tmp_path / "alias").symlink_to(real, target_is_directory=True)
    assert validate_manifest(tmp_path / "alias" / "manifest.parquet") == (1, [])
    assert os.path.exists(path)


def test_uris(tmp_path):
    local = tmp_path / "a.png"
    refs = [
        "s3://bucket/a.png",
        "gs://bucket/a.png",
        "hdfs://namenode/a.png",
        "https://cdn.example.com/a.png",
        "http://cdn.example.com/a.png",
        "ftp://host/a.png",
        f"file://{local}",
        "file:///etc/passwd",
    ]
    path = write(tmp_path, {**good_columns(len(refs)), "image": refs})
    found = problems_of(path)
    assert [r for r, _, _ in found] == [3, 4, 5, 7]
    assert found[0][2].startswith("image 'https://cdn.example.com/a.png' is an http(s) URL")
    assert "uses the URI scheme 'ftp', which pyarrow.fs cannot read" in found[2][2]
    assert "outside the manifest's folder" in found[3][2]
    cleaned = write(
        tmp_path / "ok", {**good_columns(3), "image": refs[:2] + [f"file://{tmp_path}/ok/a.png"]}
    )
    assert [r.image for r in all_rows(cleaned)] == [
        "s3://bucket/a.png",
        "gs://bucket/a.png",
        str(tmp_path / "ok" / "a.png"),
    ]


def test_check_images_exist(tmp_path):
    (tmp_path / "there.png").write_bytes(b"x")
    (tmp_path / "adir").mkdir()
    refs = ["there.png", "missing.png", "adir", "s3://bucket/unchecked.png"]
    path = write(tmp_path, {**good_columns(4), "image": refs})
    assert problems_of(path) == []
    found = problems_of(path, check_images_exist=True)
    assert found == [
        (
            1,
            "image",
            f"image file not found: {str(tmp_path / 'missing.png')!r} (from 'missing.png'); "
            f"relative paths resolve against the manifest's folder {str(tmp_path)!r}",
        ),
        (2, "image", f"image 'adir' is a folder ({str(tmp_path / 'adir')!r}), not an image file"),
    ]


def test_paths_module_helpers(tmp_path):
    assert is_within("/a/b/c", "/a/b") and is_within("/a/b", "/a/b") and is_within("/x", "/")
    assert not is_within("/a/bc", "/a/b")
    assert ImageResolver(tmp_path).resolve("x/y.png") == str(tmp_path / "x" / "y.png")
    with pytest.raises(ImageRefError, match="image is empty"):
        ImageResolver(tmp_path).resolve("  ")
    with pytest.raises(ImageRefError, match="file:// URIs must be local"):
        ImageResolver(tmp_path).resolve("file://otherhost/a.png")


# ----------------------------------------------------------------------------- CLI


def test_cli_validate_exit_codes(tmp_path, capsys):
    good = write(tmp_path / "good", good_columns())
    bad = write(tmp_path / "bad", {**good_columns(), "seed": [0, -3, 1]})
    assert cli_main(["validate", good]) == 0
    assert "3 rows, no problems" in capsys.readouterr().out
    assert cli_main(["validate", bad]) == 2
    assert "row 1, column 'seed': seed must be ≥ 0 (got -3)" in capsys.readouterr().err


# ----------------------------------------------------------------------------- fuzz


_NAMES = [
    "image",
    "instruction",
    "seed",
    "row_id",
    "product_id",
    "variant",
    "width",
    "height",
    "steps",
    "guidance",
    "output_format",
    "meta_x",
    "instrucion",
    "Seed",
    "",
]
_TYPES = {
    "int": (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    "uint": (pa.uint64(), st.integers(0, 2**64 - 1)),
    "float": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "text": (pa.string(), st.text(max_size=12)),
    "path": (
        pa.string(),
        st.sampled_from(
            [
                "a.png",
                "../x.png",
                "/etc/x",
                "s3://b/k",
                "http://x",
                "ftp://y",
                "",
                " ",
                "a/../../b",
                "file:///z",
                "file://h/z",
                "C:\\x.png",
            ]
        ),
    ),
    "bool": (pa.bool_(), st.booleans()),
    "binary": (pa.binary(), st.binary(max_size=8)),
    "null": (pa.null(), st.none()),
}


@st.composite
def random_tables(draw):
    n = draw(st.integers(0, 7))
    names = draw(st.lists(st.sampled_from(_NAMES), max_size=7))  # repeats allowed
    arrays = []
    for _ in names:
        kind = draw(st.sampled_from(sorted(_TYPES)))
        arrow_type, values = _TYPES[kind]
        column = draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n))
        arrays.append(pa.array(column, arrow_type))
    if not arrays:
        return pa.table({"x": pa.array([None] * n, pa.null())})
    return pa.Table.from_arrays(arrays, names=names)


@settings(
    database=None,  # no .hypothesis/ folder in the repository
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(table=random_tables(), batch_rows=st.integers(1, 4), check=st.booleans())
def test_fuzz_random_manifests_only_ever_report_problems(tmp_path, table, batch_rows, check):
    path = write(tmp_path, table, name="fuzz.parquet")
    rows, problems = validate_manifest(path, batch_rows=batch_rows, check_images_exist=check)
    assert rows == table.num_rows
    assert all(isinstance(p, Problem) and p.reason for p in problems)
    try:
        streamed = [r for b in iter_rows(path, batch_rows=batch_rows) for r in b]
    except ManifestError as err:
        assert err.problems
        assert problems  # iter_rows refuses only what validate_manifest reports
    else:
        if not check:
            assert problems == [] and len(streamed) == rows


_PATHS = st.sampled_from(["a.png", "b/c.png", "../x.png", "s3://b/k.png", "http://x/y", "", None])
_WELL_TYPED = {
    "image": (pa.string(), _PATHS),
    "instruction": (pa.string(), st.one_of(st.none(), st.text(max_size=6))),
    "seed": (pa.int64(), st.one_of(st.none(), st.integers(-3, 3), st.just(2**63 - 1))),
    "row_id": (pa.string(), st.one_of(st.none(), st.sampled_from(["a", "b", "", " "]))),
    "product_id": (pa.int64(), st.one_of(st.none(), st.integers(0, 3))),
    "width": (
        pa.float64(),
        st.sampled_from([None, 16.0, 512.0, 500.0, 0.0, 4112.0, 0.5, float("inf")]),
    ),
    "steps": (pa.int64(), st.sampled_from([None, 0, 1, 200, 201])),
    "guidance": (pa.float64(), st.sampled_from([None, 0.0, 20.0, -1.0, float("nan")])),
    "output_format": (pa.string(), st.sampled_from([None, "png", "JPG", "gif", ""])),
    "meta_x": (pa.string(), st.one_of(st.none(), st.text(max_size=3))),
}


@st.composite
def well_typed_tables(draw):
    """Right column types, awkward values: exercises the per-row checks."""
    n = draw(st.integers(1, 9))
    names = ["image", "instruction", "seed"]
    names += draw(st.lists(st.sampled_from(sorted(set(_WELL_TYPED) - set(names))), unique=True))
    columns = {}
    for name in names:
        arrow_type, values = _WELL_TYPED[name]
        columns[name] = pa.array(draw(st.lists(values, min_size=n, max_size=n)), arrow_type)
    return pa.table(columns)


@settings(
    database=None,  # no .hypothesis/ folder in the repository
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(table=well_typed_tables(), batch_rows=st.integers(1, 4))
def test_fuzz_row_values_are_reported_per_row_and_iteration_agrees(tmp_path, table, batch_rows):
    path = write(tmp_path, table, name="fuzz.parquet")
    rows, problems = validate_manifest(path, batch_rows=batch_rows)
    assert rows == table.num_rows
    columns = [*table.column_names, None]  # None: a repeated row
    assert all(p.row is not None and 0 <= p.row < rows and p.column in columns for p in problems)
    try:
        streamed = [r for b in iter_rows(path, batch_rows=batch_rows) for r in b]
    except ManifestError as err:
        assert {(p.row, p.column) for p in err.problems} <= {(p.row, p.column) for p in problems}
    else:
        assert problems == [] and [r.row_index for r in streamed] == list(range(rows))


@settings(
    database=None,  # no .hypothesis/ folder in the repository
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=64))
def test_fuzz_random_bytes_are_reported_not_raised(tmp_path, data):
    path = tmp_path / "junk.parquet"
    path.write_bytes(data)
    rows, problems = validate_manifest(path)
    assert rows == 0 and "is not a Parquet file" in problems[0].reason
