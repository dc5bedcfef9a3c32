"""`kontext-batch manifest build` end to end: catalog x variants x seeds through the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from jobs import cli

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINT = Path(sys.executable).parent / "kontext-batch"

PRODUCTS = [("p01-bottle", "bottle", "red"), ("p02-mug", "mug", "blue"),
            ("p03-box", "box", "orange")]
VARIANTS = """
variants:
  - name: marble
    instruction: place the {product} on {backdrop}
    backdrop: a white marble table
  - name: recolour
    instruction: make the {colour} {product} green
"""


def make_catalog(folder: Path, products=PRODUCTS, variants: str = VARIANTS) -> tuple[Path, Path]:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (pid, product, colour) in enumerate(products):
        Image.new("RGB", (16, 16), (40 * i, 90, 200)).save(folder / "images" / f"{pid}.png")
        rows.append({"product_id": pid, "image": f"images/{pid}.png", "product": product,
                     "colour": colour})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)
    (folder / "variants.yaml").write_text(textwrap.dedent(variants))
    return folder / "catalog.csv", folder / "variants.yaml"


def build(catalog: Path, variants: Path, out: Path, seeds: int | None = None,
          capsys=None) -> tuple[int, str]:
    argv = ["manifest", "build", "--catalog", str(catalog), "--variants", str(variants),
            "-o", str(out)]
    if seeds is not None:
        argv += ["--seeds", str(seeds)]
    code = cli.main(argv)
    captured = capsys.readouterr() if capsys is not None else None
    return code, (captured.out + captured.err) if captured else ""


def test_cross_product_templates_seeds_and_row_ids(tmp_path: Path, capsys) -> None:
    catalog, variants = make_catalog(tmp_path / "cat")
    out = tmp_path / "built" / "manifest.parquet"
    code, text = build(catalog, variants, out, seeds=2, capsys=capsys)
    assert code == 0 and f"wrote {out}: 12 rows" in text
    frame = pd.read_parquet(out)
    assert len(frame) == 3 * 2 * 2
    assert list(frame["row_id"][:4]) == ["p01-bottle--marble--0", "p01-bottle--marble--1",
                                         "p01-bottle--recolour--0", "p01-bottle--recolour--1"]
    by_id = frame.set_index("row_id")
    assert by_id.loc["p02-mug--marble--1", "instruction"] == "place the mug on a white marble table"
    assert by_id.loc["p03-box--recolour--0", "instruction"] == "make the orange box green"
    assert by_id.loc["p03-box--recolour--0", "meta_colour"] == "orange"
    assert os.path.isabs(by_id.loc["p02-mug--marble--0", "image"])  # outside the out folder
    assert Path(by_id.loc["p02-mug--marble--0", "image"]) == tmp_path / "cat/images/p02-mug.png"
    # Seeds: non-negative, different per k and per product, identical when rebuilt.
    assert (frame["seed"] >= 0).all() and frame["seed"].nunique() == 12
    again = tmp_path / "again.parquet"
    assert build(catalog, variants, again, seeds=2, capsys=capsys)[0] == 0
    pd.testing.assert_frame_equal(frame.drop(columns="image"),
                                  pd.read_parquet(again).drop(columns="image"))


def test_rebuild_with_more_products_and_variants_keeps_existing_rows(tmp_path: Path,
                                                                     capsys) -> None:
    catalog, variants = make_catalog(tmp_path / "cat")
    first = tmp_path / "first.parquet"
    assert build(catalog, variants, first, capsys=capsys)[0] == 0
    more_products = [("p00-cup", "cup", "white"), *PRODUCTS, ("p04-shoe", "shoe", "black")]
    catalog, variants = make_catalog(tmp_path / "cat", more_products, VARIANTS + """
  - name: studio
    instruction: make the background studio white
""")
    second = tmp_path / "second.parquet"
    assert build(catalog, variants, second, capsys=capsys)[0] == 0
    old = pd.read_parquet(first).set_index("row_id")
    new = pd.read_parquet(second).set_index("row_id")
    assert len(new) == 5 * 3 and set(old.index) <= set(new.index)
    columns = ["instruction", "seed", "image", "product_id", "variant"]
    pd.testing.assert_frame_equal(old[columns], new.loc[old.index, columns])


def test_folder_and_parquet_catalogs(tmp_path: Path, capsys) -> None:
    catalog, variants = make_catalog(tmp_path / "cat")
    out = tmp_path / "from-folder.parquet"
    # A folder has no colour field: the recolour variant's {colour} is refused by name ...
    code, text = build(tmp_path / "cat" / "images", variants, out, capsys=capsys)
    assert code == 2 and "uses field {colour}" in text
    # ... and variants that use only {product} build.
    only_marble = tmp_path / "marble.yaml"
    only_marble.write_text(VARIANTS.split("  - name: recolour")[0])
    assert build(tmp_path / "cat" / "images", only_marble, out, capsys=capsys)[0] == 0
    frame = pd.read_parquet(out)
    # A folder gives product ids from file stems and `product` from the id, '-' as a space.
    assert frame.loc[frame["row_id"] == "p02-mug--marble--0", "instruction"].item() == \
        "place the p02 mug on a white marble table"
    table = tmp_path / "cat" / "catalog.parquet"
    pd.read_csv(catalog).to_parquet(table, index=False)
    out2 = tmp_path / "from-parquet.parquet"
    assert build(table, variants, out2, capsys=capsys)[0] == 0
    assert len(pd.read_parquet(out2)) == 6


@pytest.mark.parametrize("mistake, words", [
    ("unknown-field", ["{material}", "neither the catalog nor the variant provides",
                       "available fields"]),
    ("duplicate-product", ["duplicate product id 'p01-bottle'", "first at row 0"]),
    ("bad-seeds", ["seeds_per_variant must be a positive integer"]),
])
def test_errors_exit_2_with_the_reason_and_write_nothing(tmp_path: Path, capsys, mistake: str,
                                                         words: list[str]) -> None:
    products, variants_text, seeds = PRODUCTS, VARIANTS, None
    if mistake == "duplicate-product":
        products = [*PRODUCTS, ("p01-bottle", "bottle", "green")]
    if mistake == "unknown-field":
        variants_text = VARIANTS + "  - name: wood\n    instruction: put it on {material}\n"
    if mistake == "bad-seeds":
        seeds = 0
    catalog, variants = make_catalog(tmp_path / "cat", products, variants_text)
    out = tmp_path / "out" / "manifest.parquet"
    code, text = build(catalog, variants, out, seeds=seeds, capsys=capsys)
    assert code == 2
    assert text.startswith("kontext-batch manifest build: cannot build the manifest")
    for word in words:
        assert word in text
    assert not out.exists()


def test_installed_entry_point_dispatches_manifest_job_and_pipeline_commands(tmp_path: Path
                                                                             ) -> None:
    catalog, variants = make_catalog(tmp_path / "cat")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "m.parquet"
    done = subprocess.run([str(ENTRY_POINT), "manifest", "build", "--catalog", str(catalog),
                           "--variants", str(variants), "--seeds", "3", "-o", str(out)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}: 18 rows" in done.stdout and len(pd.read_parquet(out)) == 18

    top = subprocess.run([str(ENTRY_POINT), "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert top.returncode == 0
    assert all(f"\n    {c} " in top.stdout for c in ("run", "report", "manifest"))
    assert all(f"\n  {c} " in top.stdout for c in ("job run", "job history", "job schedule"))
    run = subprocess.run([str(ENTRY_POINT), "run", "--help"], capture_output=True, text=True,
                         env=env, timeout=120)
    assert run.returncode == 0 and "--batch-size" in run.stdout  # pipeline's own parser
    job = subprocess.run([str(ENTRY_POINT), "job", "run", "--help"], capture_output=True,
                         text=True, env=env, timeout=120)
    assert job.returncode == 0 and "3 stopped at the budget cap" in job.stdout


def test_job_validate_loads_the_catalog_and_variants_as_the_run_would(tmp_path: Path,
                                                                      capsys) -> None:
    # A template field neither file provides: the files exist (the old check passed) but the
    # nightly build would refuse them; validate now says so first.
    catalog, variants = make_catalog(
        tmp_path / "cat", PRODUCTS, VARIANTS + "  - name: wood\n    instruction: on {material}\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(f"name: nightly\nbuild:\n  catalog: {catalog}\n  variants: {variants}\n"
                    f"model: kontext-tiny\noutput: {tmp_path / 'out'}\n")
    from jobs import cli as jobs_cli

    assert jobs_cli.main(["job", "validate", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "kontext-batch job validate: cannot build the manifest" in err and "{material}" in err
    variants.write_text(VARIANTS)
    assert jobs_cli.main(["job", "validate", str(spec)]) == 0
    assert "ok (job nightly" in capsys.readouterr().out
