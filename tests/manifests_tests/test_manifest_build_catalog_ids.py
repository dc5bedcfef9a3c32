"""The manifest builder keeps going past bad products, keeps Unicode product ids apart, refuses
row ids that would collide and variant settings spelled wrong, and takes pandas' float ids as
integers."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from jobs import cli
from manifests import BuildError, build_manifest
from manifests.build import load_variants, stable_row_id

# ----------------------------------------------------------------------------- 1. bad products


def make_catalog(folder: Path, csv_text: str, images: list[str]) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in images:
        Image.new("RGB", (16, 16), (200, 90, 40)).save(folder / "images" / name)
    (folder / "catalog.csv").write_text(csv_text, encoding="utf-8")
    return folder / "catalog.csv"


VARIANTS = "variants:\n  - name: tint\n    instruction: make the {product} {colour}\n"


def test_one_bad_product_does_not_stop_the_nightly_build(tmp_path: Path, capsys) -> None:
    # Through the command a nightly job uses: exit 0, the good products built, the product
    # with a missing image written (the run fails it alone), the one with an empty {colour}
    # skipped, and both named in a counted warning on stderr.
    catalog = make_catalog(tmp_path / "cat", "product_id,image,product,colour\n"
                           "A,images/a.png,bottle,red\nB,images/missing.png,mug,blue\n"
                           "C,images/c.png,box,\n", ["a.png", "c.png"])
    variants = tmp_path / "cat" / "v.yaml"
    variants.write_text(VARIANTS)
    out = tmp_path / "out" / "manifest.parquet"
    code = cli.main(["manifest", "build", "--catalog", str(catalog), "--variants",
                     str(variants), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0 and f"wrote {out}: 2 rows" in captured.out
    rows = pq.read_table(out).to_pylist()
    assert [(r["row_id"], r["image"], r["instruction"]) for r in rows] == [
        ("A--tint--0", str(tmp_path / "cat/images/a.png"), "make the bottle red"),
        ("B--tint--0", str(tmp_path / "cat/images/missing.png"), "make the mug blue"),
    ]
    err = captured.err
    assert "manifest built (2 rows) with 2 warning(s): 1 row(s) written whose image is " \
           "missing (they will fail in the run); 1 row(s) skipped" in err
    assert "(product 'B'): image not found" in err and "product 'C' has no value for " \
           "{colour}, used by variant 'tint'" in err


def test_the_warning_report_is_capped_and_counted(tmp_path: Path) -> None:
    lines = "".join(f"P{i},images/a.png,thing,\n" for i in range(30))
    catalog = make_catalog(tmp_path / "cat", "product_id,image,product,colour\n"
                           "A,images/a.png,bottle,red\n" + lines, ["a.png"])
    variants = tmp_path / "cat" / "v.yaml"
    variants.write_text(VARIANTS)
    result = build_manifest(catalog, variants, 3, out=tmp_path / "m.parquet", warn=None)
    assert result == 3 and result.skipped_rows == 30 * 3 and len(result.warnings) == 30
    report = result.report(limit=5).splitlines()
    assert len(report) == 1 + 5 + 1 and report[-1] == "  ... and 25 more warning(s) not listed"
    assert report[1] == ("  - product 'P0' has no value for {colour}, used by variant 'tint'; "
                         "fill it in the catalog or drop it from the instruction (skipped)")


# ----------------------------------------------------------------------------- 2. Unicode ids


def _old_sanitise(part: str) -> str:
    """The row-id part rule every existing (ASCII) manifest was built with."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "_", part.strip()))


@pytest.mark.parametrize("pid, part", [
    ("SKU-0001", "SKU-0001"), ("a b", "a_b"), ("x--y", "x-y"), ("p/1\\2", "p_1_2"),
    (" A.b_c ", "A.b_c"), ("a  ,b", "a_b"), ("a-", "a-"), ("-b", "-b"), ("ä", "ä"),
])
def test_row_id_parts_of_ordinary_ids(pid: str, part: str) -> None:
    assert stable_row_id(pid, "v", 0) == f"{part}--v--0"


def catalog_and_variants(tmp_path: Path, catalog_text: str, images: list[str],
                         variants_text: str) -> tuple[Path, Path]:
    """A catalog (with its image files) and a variants file beside it."""
    catalog = make_catalog(tmp_path / "cat", catalog_text, images)
    variants = tmp_path / "cat" / "v.yaml"
    variants.write_text(variants_text)
    return catalog, variants


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=24))
def test_ascii_ids_keep_exactly_the_row_ids_they_had(pid: str) -> None:
    # Nightly runs match rows across days by row id: no ASCII id may map differently now.
    assert stable_row_id(pid, "solid-blue", 3) == f"{_old_sanitise(pid)}--solid-blue--3"


def test_an_all_cjk_catalog_builds_with_distinct_row_ids(tmp_path: Path) -> None:
    catalog, variants = catalog_and_variants(
        tmp_path, "product_id,image,product,colour\n"
        "靴,images/a.png,shoe,red\n鞄,images/b.png,bag,blue\n"
        "café-1,images/a.png,cup,red\ncafè-1,images/b.png,cup,red\n", ["a.png", "b.png"],
        "variants:\n  - name: 赤\n    instruction: make the {product} red\n")
    assert build_manifest(catalog, variants, out=tmp_path / "m.parquet") == 4
    assert pq.read_table(tmp_path / "m.parquet").column("row_id").to_pylist() == [
        "靴--赤--0", "鞄--赤--0", "café-1--赤--0", "cafè-1--赤--0"]


def test_a_decomposed_accent_is_the_same_letter(tmp_path: Path) -> None:
    # 'café' typed (NFC) and 'café' from a macOS file name (NFD) are one row-id part, so a
    # catalog holding both is refused by name rather than given two look-alike row ids.
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    assert stable_row_id(nfd, "v", 0) == stable_row_id(nfc, "v", 0) == "caf\u00e9--v--0"
    catalog, variants = catalog_and_variants(
        tmp_path, f"product_id,image\n{nfc},images/a.png\n{nfd},images/a.png\n", ["a.png"],
        "- name: v\n  instruction: make it red\n")
    with pytest.raises(BuildError) as info:
        build_manifest(catalog, variants, out=tmp_path / "m.parquet")
    assert "give the same row-id part" in str(info.value)


# ----------------------------------------------------------------------------- 3. collisions


def test_row_ids_that_would_collide_are_refused_naming_both_products(tmp_path: Path) -> None:
    catalog, variants = catalog_and_variants(
        tmp_path, "product_id,image\na-,images/a.png\na,images/a.png\n", ["a.png"],
        "- name: b\n  instruction: red\n- name: -b\n  instruction: blue\n")
    with pytest.raises(BuildError) as info:
        build_manifest(catalog, variants, out=tmp_path / "m.parquet")
    assert [p.reason for p in info.value.problems] == [
        "product 'a-' with variant 'b' and product 'a' with variant '-b' would share the row "
        "id 'a---b--0'; rename one of them (e.g. drop the trailing '-' of 'a-' or the leading "
        "'-' of '-b')"
    ]
    assert not (tmp_path / "m.parquet").exists()


def test_trailing_and_leading_dashes_alone_keep_their_row_ids(tmp_path: Path) -> None:
    # Without the matching variant pair nothing collides: ids with a stray '-' build as
    # they always did (their row ids are not trimmed, so nightly history still matches).
    catalog, variants = catalog_and_variants(
        tmp_path, "product_id,image\na-,images/a.png\na,images/a.png\n", ["a.png"],
        "- name: -b\n  instruction: red\n- name: c-\n  instruction: blue\n")
    assert build_manifest(catalog, variants, out=tmp_path / "m.parquet") == 4
    assert pq.read_table(tmp_path / "m.parquet").column("row_id").to_pylist() == [
        "a----b--0", "a---c---0", "a---b--0", "a--c---0"]


# ----------------------------------------------------------------------------- 4. typos


def test_unused_variant_fields_spelled_like_settings_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("variants:\n  - name: studio\n    instruction: studio white {backdrop}\n"
                    "    backdrop: paper\n    output_fromat: jpeg\n    guidence: 3.5\n"
                    "    stpes: 40\n")
    with pytest.raises(BuildError) as info:
        load_variants(path)
    reasons = [p.reason for p in info.value.problems]
    assert len(reasons) == 3
    for typo, setting in (("output_fromat", "output_format"), ("guidence", "guidance"),
                          ("stpes", "steps")):
        assert f"variant 'studio': unknown setting {typo!r} (did you mean {setting!r}?)" in \
            "\n".join(reasons)


def test_a_field_the_instruction_uses_may_look_like_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("- name: heavy\n  instruction: make it look {weight}\n  weight: heavy\n"
                    "  style: matte\n")
    (variant,) = load_variants(path)  # 'weight' is used; 'style' is close to nothing
    assert variant.fields == {"weight": "heavy", "style": "matte"}


def test_unknown_top_level_keys_are_refused_with_their_line(tmp_path: Path) -> None:
    path = tmp_path / "v.yaml"
    path.write_text("defaults:\n  steps: 12\nvariants:\n  - name: a\n    instruction: red\n"
                    "varients: []\n")
    with pytest.raises(BuildError) as info:
        load_variants(path)
    assert [p.reason for p in info.value.problems] == [
        f"variants file {str(path)!r} line 1: unknown top-level key 'defaults'; the file holds "
        "only a 'variants' list, and each variant carries its own settings",
        f"variants file {str(path)!r} line 6: unknown top-level key 'varients' (did you mean "
        "'variants'?); the file holds only a 'variants' list, and each variant carries its "
        "own settings",
    ]


# ----------------------------------------------------------------------------- 5. float ids


def test_pandas_float_product_ids_are_taken_as_integers(tmp_path: Path) -> None:
    import pandas as pd

    folder = tmp_path / "cat"
    make_catalog(folder, "unused\n", ["a.png"])
    variants = folder / "v.yaml"
    variants.write_text("- name: v\n  instruction: make it red\n")
    ints = pd.DataFrame({"product_id": [101, 102], "image": ["images/a.png"] * 2})
    ints.to_parquet(folder / "ints.parquet", index=False)
    # One gap turns the column into float64 (101.0, NaN, 103.0): the ids must not change.
    gappy = pd.DataFrame({"product_id": [101, None, 102, 101.5],
                          "image": ["images/a.png"] * 4})
    assert gappy["product_id"].dtype == "float64"
    gappy.to_parquet(folder / "gappy.parquet", index=False)

    build_manifest(folder / "ints.parquet", variants, out=tmp_path / "ints.parquet")
    result = build_manifest(folder / "gappy.parquet", variants, out=tmp_path / "gappy.parquet",
                            warn=None)
    assert result == 2 and result.skipped_products == 2
    columns = ["row_id", "seed", "product_id"]
    assert pq.read_table(tmp_path / "gappy.parquet", columns=columns).to_pylist() == \
        pq.read_table(tmp_path / "ints.parquet", columns=columns).to_pylist()
    assert pq.read_table(tmp_path / "ints.parquet").column("row_id").to_pylist() == \
        ["101--v--0", "102--v--0"]
    source = str(folder / "gappy.parquet")
    assert result.warnings == (
        f"catalog {source!r} row 1: product_id is empty; give every product an id (skipped)",
        f"catalog {source!r} row 3: product_id must be text or an integer (got 101.5); write "
        "the product_id column as text (skipped)",
    )
