"""Building manifests from a catalog and a variants file (manifests.build)."""

from __future__ import annotations

import hashlib
import logging
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from manifests import BuildError, build_manifest, iter_rows, validate_manifest
from manifests.__main__ import main as cli_main
from manifests.build import load_variants, stable_row_id, variant_seed

EXAMPLE_VARIANTS = os.path.join(
    os.path.dirname(__file__), "..", "..", "manifests", "examples", "variants.yaml"
)

VARIANTS_YAML = """\
- name: red
  instruction: place the {product} on a solid red background
- name: marble
  instruction: place the {colour} {product} on {backdrop}
  backdrop: a white marble slab
  steps: 20
  guidance: 3.5
  output_format: JPG
- name: plain
  instruction: replace the background with studio white ({variant})
"""


def make_images(folder, names) -> None:
    os.makedirs(folder, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(os.path.join(folder, name))


def write_text(path, text) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


@pytest.fixture
def project(tmp_path):
    """A CSV catalog of 3 products under tmp/, images in tmp/images, a variants file."""
    make_images(tmp_path / "images", ["mug.png", "lamp.jpg", "sofa.png"])
    catalog = write_text(
        tmp_path / "catalog.csv",
        "product_id,image,product,colour,category\n"
        "mug-01,images/mug.png,coffee mug,blue,kitchen\n"
        "lamp-02,images/lamp.jpg,desk lamp,black,lighting\n"
        "sofa-03,images/sofa.png,,green,furniture\n",
    )
    variants = write_text(tmp_path / "variants.yaml", VARIANTS_YAML)
    return tmp_path, catalog, variants


def read(path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def build_error(*args, **kwargs) -> BuildError:
    with pytest.raises(BuildError) as err:
        build_manifest(*args, **kwargs)
    return err.value


# ----------------------------------------------------------------------------- the happy path


def test_cross_product_size_order_and_validity(project):
    tmp, catalog, variants = project
    out = tmp / "manifest.parquet"
    assert build_manifest(catalog, variants, 2, out) == 3 * 3 * 2
    rows = read(out)
    assert len(rows) == 18
    assert [(r["product_id"], r["variant"]) for r in rows[:6]] == [
        ("mug-01", "red"),
        ("mug-01", "red"),
        ("mug-01", "marble"),
        ("mug-01", "marble"),
        ("mug-01", "plain"),
        ("mug-01", "plain"),
    ]
    assert [r["row_id"] for r in rows[:2]] == ["mug-01--red--0", "mug-01--red--1"]
    assert len({r["row_id"] for r in rows}) == 18
    assert validate_manifest(out, check_images_exist=True) == (18, [])
    streamed = [row for batch in iter_rows(out) for row in batch]
    assert streamed[0].image == str(tmp / "images" / "mug.png")


def test_template_filling_from_catalog_and_variant_fields(project):
    tmp, catalog, variants = project
    out = tmp / "m.parquet"
    build_manifest(catalog, variants, out=out)
    got = {(r["product_id"], r["variant"]): r["instruction"] for r in read(out)}
    assert got[("mug-01", "red")] == "place the coffee mug on a solid red background"
    assert got[("lamp-02", "marble")] == "place the black desk lamp on a white marble slab"
    assert got[("mug-01", "plain")] == "replace the background with studio white (plain)"
    # An empty product name falls back to the product id, humanised.
    assert got[("sofa-03", "red")] == "place the sofa 03 on a solid red background"


def test_variant_settings_and_meta_columns(project):
    tmp, catalog, variants = project
    out = tmp / "m.parquet"
    build_manifest(catalog, variants, out=out)
    table = pq.read_table(out)
    assert table.column_names == [
        "row_id",
        "image",
        "instruction",
        "seed",
        "product_id",
        "variant",
        "steps",
        "guidance",
        "output_format",
        "meta_product",
        "meta_colour",
        "meta_category",
    ]
    by_variant = {r["variant"]: r for r in table.to_pylist() if r["product_id"] == "mug-01"}
    assert (by_variant["marble"]["steps"], by_variant["marble"]["guidance"]) == (20, 3.5)
    assert by_variant["marble"]["output_format"] == "jpeg"
    assert by_variant["red"]["steps"] is None and by_variant["red"]["output_format"] is None
    assert by_variant["red"]["meta_category"] == "kitchen"
    assert table.schema.field("seed").type == pa.int64()


def test_seeds_are_deterministic_sha256_derived_and_in_range(project):
    tmp, catalog, variants = project
    out = tmp / "m.parquet"
    build_manifest(catalog, variants, 3, out=out)
    for row in read(out):
        k = int(row["row_id"].rsplit("--", 1)[1])
        digest = hashlib.sha256(f"{row['product_id']}\x1f{row['variant']}\x1f{k}".encode()).digest()
        assert row["seed"] == int.from_bytes(digest[:8], "big") % 2**31
        assert 0 <= row["seed"] < 2**31
    seeds = [variant_seed("mug-01", "red", k) for k in range(50)]
    assert len(set(seeds)) == 50
    assert variant_seed("mug-01", "red", 0) == variant_seed("mug-01", "red", 0)
    assert variant_seed("mug-01", "red", 0) != variant_seed("mug-01", "marble", 0)


def test_rebuilding_with_more_products_and_variants_keeps_existing_rows(project):
    tmp, catalog, variants = project
    build_manifest(catalog, variants, 2, tmp / "first.parquet")
    make_images(tmp / "images", ["chair.png"])
    with open(catalog, "a") as f:
        f.write("chair-04,images/chair.png,chair,grey,furniture\n")
    with open(variants, "a") as f:
        f.write("- name: wood\n  instruction: place the {product} on an oak table\n")
    assert build_manifest(catalog, variants, 2, tmp / "second.parquet") == 4 * 4 * 2
    key = ("row_id", "seed", "instruction", "image", "product_id", "variant")
    first = {tuple(r[k] for k in key) for r in read(tmp / "first.parquet")}
    second = {tuple(r[k] for k in key) for r in read(tmp / "second.parquet")}
    assert first < second  # every old row, unchanged, plus the new ones


def test_row_ids_are_sanitised(tmp_path):
    make_images(tmp_path / "imgs", ["a.png"])
    catalog = write_text(tmp_path / "c.csv", "product_id,image\nmug 01/blue--x,imgs/a.png\n")
    variants = write_text(tmp_path / "v.yaml", "- name: 'red bg!'\n  instruction: make it red\n")
    build_manifest(catalog, variants, out=tmp_path / "m.parquet")
    assert read(tmp_path / "m.parquet")[0]["row_id"] == "mug_01_blue-x--red_bg_--0"
    assert stable_row_id("a b", "c", 2) == "a_b--c--2"


def test_folder_catalog_uses_stems_as_product_ids(tmp_path):
    make_images(tmp_path / "shop", ["red_mug.png", "desk-lamp.JPG"])
    (tmp_path / "shop" / "notes.txt").write_text("not an image")
    variants = write_text(
        tmp_path / "v.yaml", "- name: red\n  instruction: put the {product} on red\n"
    )
    out = tmp_path / "shop" / "manifest.parquet"
    assert build_manifest(tmp_path / "shop", variants, out=out) == 2
    rows = read(out)
    assert [(r["product_id"], r["image"]) for r in rows] == [
        ("desk-lamp", "desk-lamp.JPG"),
        ("red_mug", "red_mug.png"),
    ]
    assert rows[1]["instruction"] == "put the red mug on red"


def test_parquet_catalog(tmp_path):
    make_images(tmp_path / "imgs", ["a.png", "b.png"])
    pq.write_table(
        pa.table(
            {
                "product_id": [101, 102],
                "image": ["imgs/a.png", "imgs/b.png"],
                "weight_kg": [1.5, None],
            }
        ),
        tmp_path / "catalog.parquet",
    )
    variants = write_text(
        tmp_path / "v.yaml", "variants:\n  - name: red\n    instruction: put {product} on red\n"
    )
    out = tmp_path / "m.parquet"
    assert build_manifest(tmp_path / "catalog.parquet", variants, out=out) == 2
    table = pq.read_table(out)
    assert table.column("product_id").to_pylist() == ["101", "102"]
    assert table.column("meta_weight_kg").to_pylist() == [1.5, None]
    assert table.schema.field("meta_weight_kg").type == pa.float64()


def test_images_outside_the_manifest_folder_stay_absolute(project, caplog):
    tmp, catalog, variants = project
    out = tmp / "runs" / "m.parquet"
    with caplog.at_level(logging.WARNING, logger="manifests.build"):
        build_manifest(catalog, variants, out=out)
    images = {r["image"] for r in read(out)}
    assert images == {str(tmp / "images" / n) for n in ("mug.png", "lamp.jpg", "sofa.png")}
    assert "image_roots" in caplog.text and str(tmp / "images") in caplog.text
    # Path safety: such a manifest needs the images' folder allowed explicitly.
    _, problems = validate_manifest(out)
    assert len(problems) == 9 and "outside the manifest's folder" in problems[0].reason
    assert validate_manifest(out, image_roots=[str(tmp / "images")]) == (9, [])


def test_symlinked_image_folder_inside_the_manifest_folder(tmp_path, caplog):
    make_images(tmp_path / "store", ["a.png"])
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "images").symlink_to(tmp_path / "store", target_is_directory=True)
    catalog = write_text(tmp_path / "shop" / "c.csv", "product_id,image\np1,images/a.png\n")
    variants = write_text(tmp_path / "v.yaml", "- name: red\n  instruction: put {product} on red\n")
    out = tmp_path / "shop" / "m.parquet"
    with caplog.at_level(logging.WARNING, logger="manifests.build"):
        assert build_manifest(catalog, variants, out=out) == 1
    assert read(out)[0]["image"] == os.path.join("images", "a.png")
    assert str(tmp_path / "store") in caplog.text  # the root to allow when validating
    assert validate_manifest(out, image_roots=[str(tmp_path / "store")]) == (1, [])


def test_remote_catalog_images_are_kept_as_uris(tmp_path):
    catalog = write_text(tmp_path / "c.csv", "product_id,image\np1,s3://bucket/p1.png\n")
    variants = write_text(tmp_path / "v.yaml", "- name: red\n  instruction: put {product} on red\n")
    build_manifest(catalog, variants, out=tmp_path / "m.parquet")
    assert read(tmp_path / "m.parquet")[0]["image"] == "s3://bucket/p1.png"


def test_example_variants_file(tmp_path):
    variants = load_variants(EXAMPLE_VARIANTS)
    assert 5 <= len(variants) <= 8
    assert all("{product}" in v.template.text or "background" in v.template.text for v in variants)
    make_images(tmp_path / "shop", ["mug.png", "lamp.png"])
    out = tmp_path / "shop" / "m.parquet"
    assert build_manifest(tmp_path / "shop", EXAMPLE_VARIANTS, out=out) == 2 * len(variants)
    assert validate_manifest(out, check_images_exist=True) == (2 * len(variants), [])


# ----------------------------------------------------------------------------- errors


def test_bad_images_are_all_named_and_do_not_stop_the_build(tmp_path, capsys):
    # A bad row fails alone: a missing file is still written (the run fails its rows with the
    # reason); an empty or unreadable reference cannot make a row, so that product is skipped.
    make_images(tmp_path / "imgs", ["a.png"])
    catalog = write_text(
        tmp_path / "c.csv",
        "product_id,image\np1,imgs/a.png\np2,imgs/gone.png\np3,\np4,http://x/y.png\n",
    )
    variants = write_text(tmp_path / "v.yaml", "- name: red\n  instruction: put {product} on red\n")
    result = build_manifest(catalog, variants, out=tmp_path / "m.parquet", warn=None)
    assert result == 2 and result.missing_image_rows == 1 and result.skipped_products == 2
    gone = str(tmp_path / "imgs" / "gone.png")
    assert [(r["product_id"], r["image"]) for r in read(tmp_path / "m.parquet")] == [
        ("p1", "imgs/a.png"),  # under the manifest's folder: relative, as before
        ("p2", "imgs/gone.png"),
    ]
    assert len(result.warnings) == 3
    assert result.warnings[0] == (
        f"catalog {catalog!r} row 1 (product 'p2'): image not found: {gone!r} (relative "
        f"paths resolve against {str(tmp_path)!r}) (its rows are written and will fail in the run)"
    )
    assert "row 2 (product 'p3'): image is empty" in result.warnings[1]
    assert result.warnings[1].endswith("(skipped)")
    assert "uses the scheme 'http', which pyarrow.fs cannot read" in result.warnings[2]
    assert capsys.readouterr().err == ""  # warn=None: the caller prints result.report()


def test_a_catalog_with_no_usable_product_is_still_an_error(tmp_path):
    catalog = write_text(tmp_path / "c.csv", "product_id,image\np1,\n,x.png\n")
    variants = write_text(tmp_path / "v.yaml", "- name: red\n  instruction: red\n")
    err = build_error(catalog, variants, out=tmp_path / "m.parquet")
    assert [p.reason for p in err.problems] == [
        f"catalog {catalog!r} row 0 (product 'p1'): image is empty; give a path (relative to "
        "the catalog's folder) or a URI (skipped)",
        f"catalog {catalog!r} row 1: product_id is empty; give every product an id (skipped)",
    ]
    assert not (tmp_path / "m.parquet").exists()


def test_unknown_template_field_names_variant_field_and_available_fields(project):
    tmp, catalog, _ = project
    variants = write_text(tmp / "v.yaml", "- name: red\n  instruction: put the {prodcut} on red\n")
    err = build_error(catalog, variants, out=tmp / "m.parquet")
    assert [p.reason for p in err.problems] == [
        "variant 'red': instruction uses field {prodcut}, which neither the catalog nor the "
        "variant provides; available fields: category, colour, product, product_id, variant"
    ]


@pytest.mark.parametrize(
    ("instruction", "expected"),
    [
        ("'{product.__class__}'", "field {product.__class__} uses attribute or index access"),
        ("'{product[0]}'", "field {product[0]} uses attribute or index access"),
        ("'{0} on red'", "positional field {0} is not allowed"),
        ("'{} on red'", "positional field {} is not allowed"),
        ("'{product:{width}}'", "nested field in its format spec"),
        ("'{product'", "malformed template"),
    ],
)
def test_templates_cannot_evaluate_anything(project, instruction, expected):
    tmp, catalog, _ = project
    variants = write_text(tmp / "v.yaml", f"- name: x\n  instruction: {instruction}\n")
    err = build_error(catalog, variants, out=tmp / "m.parquet")
    assert len(err.problems) == 1
    assert err.problems[0].reason.startswith(
        f"variants file {variants!r} line 1, variant 'x': instruction template: "
    )
    assert expected in err.problems[0].reason


def test_missing_value_for_a_used_field_skips_that_row_with_a_warning(project, capsys):
    tmp, catalog, _ = project
    with open(catalog, "a") as f:
        f.write("vase-05,images/mug.png,vase,,decor\n")
    variants = write_text(tmp / "v.yaml", "- name: c\n  instruction: make the {product} {colour}\n")
    result = build_manifest(catalog, variants, 2, out=tmp / "m.parquet")
    assert result == 3 * 2 and result.skipped_rows == 2
    assert "vase-05" not in {r["product_id"] for r in read(tmp / "m.parquet")}
    warning = (
        "product 'vase-05' has no value for {colour}, used by variant 'c'; fill it in the "
        "catalog or drop it from the instruction (skipped)"
    )
    assert result.warnings == (warning,)
    # By default the counted report goes to stderr, where a nightly job's log keeps it.
    assert capsys.readouterr().err == (
        "manifest built (6 rows) with 1 warning(s): 2 row(s) skipped: an instruction field "
        f"has no value\n  - {warning}\n"
    )


def test_every_row_skipped_is_an_error(project):
    tmp, catalog, _ = project
    variants = write_text(tmp / "v.yaml", "- name: c\n  instruction: make it {size}\n  size: ' '\n")
    err = build_error(catalog, variants, out=tmp / "m.parquet")
    assert "field 'size' is empty" in err.problems[0].reason
    catalog2 = write_text(tmp / "c2.csv", "product_id,image,colour\nmug-01,images/mug.png,\n")
    variants = write_text(tmp / "v.yaml", "- name: c\n  instruction: make it {colour}\n")
    err = build_error(catalog2, variants, out=tmp / "m.parquet")
    assert [p.reason for p in err.problems] == [
        "product 'mug-01' has no value for {colour}, used by variant 'c'; fill it in the "
        "catalog or drop it from the instruction (skipped)"
    ]
    assert not (tmp / "m.parquet").exists()


def test_duplicate_product_ids(tmp_path):
    make_images(tmp_path / "imgs", ["a.png", "a.jpg", "b.png"])
    variants = write_text(tmp_path / "v.yaml", "- name: red\n  instruction: red\n")
    catalog = write_text(
        tmp_path / "c.csv", "product_id,image\np1,imgs/a.png\np2,imgs/b.png\np1,imgs/b.png\n"
    )
    err = build_error(catalog, variants, out=tmp_path / "m.parquet")
    assert [p.reason for p in err.problems] == [
        f"catalog {catalog!r} row 2: duplicate product id 'p1' (first at row 0); product ids must be unique"
    ]
    err = build_error(tmp_path / "imgs", variants, out=tmp_path / "m.parquet")
    assert "duplicate product id 'a' from files a.jpg, a.png" in err.problems[0].reason
    catalog = write_text(tmp_path / "c2.csv", "product_id,image\na b,imgs/b.png\na_b,imgs/b.png\n")
    err = build_error(catalog, variants, out=tmp_path / "m.parquet")
    assert "product ids 'a b' and 'a_b' give the same row-id part 'a_b'" in err.problems[0].reason


def test_empty_catalogs(tmp_path):
    variants = write_text(tmp_path / "v.yaml", "- name: red\n  instruction: red\n")
    (tmp_path / "empty").mkdir()
    err = build_error(tmp_path / "empty", variants, out=tmp_path / "m.parquet")
    assert "has no images" in err.problems[0].reason
    catalog = write_text(tmp_path / "c.csv", "product_id,image\n")
    err = build_error(catalog, variants, out=tmp_path / "m.parquet")
    assert err.problems[0].reason == f"catalog {catalog!r} has no products; add at least one row"
    catalog = write_text(tmp_path / "c2.csv", "id,picture\nx,y\n")
    err = build_error(catalog, variants, out=tmp_path / "m.parquet")
    assert "lacks column(s) product_id, image" in err.problems[0].reason
    err = build_error(tmp_path / "nope.csv", variants, out=tmp_path / "m.parquet")
    assert err.problems[0].reason.startswith("catalog not found")
    err = build_error(variants, variants, out=tmp_path / "m.parquet")
    assert "neither a folder of images nor a .csv or .parquet file" in err.problems[0].reason


@pytest.mark.parametrize("text", ["", "[]\n", "variants: []\n", "just text\n"])
def test_empty_variants(project, text):
    tmp, catalog, _ = project
    variants = write_text(tmp / "v.yaml", text)
    err = build_error(catalog, variants, out=tmp / "m.parquet")
    assert [p.reason.split(";")[0] for p in err.problems] == [
        f"variants file {variants!r} has no variants"
    ]


def test_malformed_yaml_names_file_and_line(project):
    tmp, catalog, _ = project
    variants = write_text(
        tmp / "v.yaml",
        "- name: red\n  instruction: put {product} on red\n- name: blue\n  instruction: [unclosed\n",
    )
    err = build_error(catalog, variants, out=tmp / "m.parquet")
    (problem,) = err.problems
    assert problem.reason.startswith(f"variants file {variants!r} is not valid YAML at line 5")
    assert str(variants) in str(err)


def test_variant_entry_problems_are_all_reported(project):
    tmp, catalog, _ = project
    variants = write_text(
        tmp / "v.yaml",
        "- name: a\n  instruction: ok {product}\n"
        "- instruction: no name\n"
        "- name: b\n"
        "- name: c\n  instruction: x\n  steps: 500\n  width: 100\n  nested: {k: v}\n"
        "- name: a\n  instruction: again\n"
        "- just a string\n"
        "- name: d\n  instruction: on {backdrop}\n  backdrop:\n",
    )
    err = build_error(catalog, variants, out=tmp / "m.parquet")
    reasons = [p.reason.removeprefix(f"variants file {variants!r}").lstrip() for p in err.problems]
    assert reasons == [
        "line 3: variant has no name; add name: <short id>, e.g. name: red",
        "line 4, variant 'b': no instruction; add e.g. instruction: 'place the {product} on a red background'",
        "line 5, variant 'c': steps must be between 1 and 200 (got 500)",
        "line 5, variant 'c': width must be a positive multiple of 16 and at most 4096 (got 100); leave it null to keep the model's size policy",
        "line 5, variant 'c': field 'nested' must be a single value (text or number), not dict",
        "line 12: each variant must be a mapping with name and instruction (got 'just a string')",
        "line 13, variant 'd': field 'backdrop' is empty; give it a value or remove it",
        ": variant 'a' is defined twice; variant names must be unique",
    ]


def test_catalog_and_variant_problems_come_together(tmp_path):
    err = build_error(tmp_path / "none.csv", tmp_path / "none.yaml", out=tmp_path / "m.parquet")
    assert [p.reason.split(":")[0] for p in err.problems] == [
        "catalog not found",
        "variants file not found",
    ]
    assert str(err).startswith("cannot build the manifest (2 problems):")


def test_bad_seeds_per_variant_and_missing_out(project):
    tmp, catalog, variants = project
    err = build_error(catalog, variants, 0, tmp / "m.parquet")
    assert err.problems[0].reason == "seeds_per_variant must be a positive integer (got 0)"
    with pytest.raises(TypeError, match="needs out="):
        build_manifest(catalog, variants)


def test_a_failed_build_leaves_the_existing_manifest_alone(project):
    tmp, catalog, variants = project
    out = tmp / "m.parquet"
    build_manifest(catalog, variants, out=out)
    before = out.read_bytes()
    with open(catalog, "a") as f:
        f.write("mug-01,images/mug.png,vase,red,decor\n")  # a duplicate id fails the build
    build_error(catalog, variants, 2, out)
    assert out.read_bytes() == before
    assert [n for n in os.listdir(tmp) if n.startswith(".manifest-")] == []


def test_cli_build(project, capsys):
    tmp, catalog, variants = project
    out = str(tmp / "m.parquet")
    args = ["build", "--catalog", catalog, "--variants", variants, "--out", out]
    assert cli_main([*args, "--seeds-per-variant", "2"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {out}: 18 rows"
    assert cli_main(["build", "--catalog", catalog, "--variants", catalog, "--out", out]) == 2
    assert "cannot build the manifest" in capsys.readouterr().err
