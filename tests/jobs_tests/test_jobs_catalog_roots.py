"""A job that builds its manifest may read the catalog's folder (and the spec's image_roots),
not every folder its catalog names: an image elsewhere fails its rows alone, the reason
naming image_roots, and the review page does not show it."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
from job_catalog_helpers import write_red_job
from PIL import Image
from pipeline_helpers import ray_cluster_fixture

from jobs.runner import catalog_root, run_job
from jobs.spec import load_job_spec

DATE = "2026-11-27"


def make_job(tmp_path: Path, extra: str = "") -> tuple[Path, Path]:
    """A CSV catalog with p00 in its folder and p01 in a folder outside it."""
    (tmp_path / "catalog" / "images").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    inside = tmp_path / "catalog" / "images" / "p00.png"
    outside = tmp_path / "elsewhere" / "secret.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(inside)
    Image.new("RGB", (32, 32), (30, 30, 200)).save(outside)
    pd.DataFrame([{"product_id": "p00", "image": "images/p00.png", "product": "box"},
                  {"product_id": "p01", "image": str(outside), "product": "box"}]
                 ).to_csv(tmp_path / "catalog" / "catalog.csv", index=False)
    return write_red_job(tmp_path, "roots", extra), outside


def by_product(run_dir: Path) -> dict[str, dict]:
    return {r["product_id"]: r for r in pq.read_table(run_dir / "results.parquet").to_pylist()}


ray_cluster = ray_cluster_fixture()


def test_an_image_outside_the_catalog_folder_fails_its_rows_alone(tmp_path: Path, ray_cluster,
                                                                  capsys) -> None:
    spec_path, outside = make_job(tmp_path)
    result = run_job(load_job_spec(spec_path), DATE, progress=False, retry_backoff_s=0.05)
    assert (result.status, result.exit_code) == ("failed-rows", 1)
    rows = by_product(result.run_dir)
    assert rows["p00"]["status"] == "done"
    assert rows["p01"]["status"] == "failed" and rows["p01"]["error_class"] == "bad-row"
    assert str(outside) in rows["p01"]["reason"] and "image_roots" in rows["p01"]["reason"]
    assert "--image-root" not in rows["p01"]["reason"]
    err = capsys.readouterr().err
    assert f"the catalog names images outside its folder ({outside.parent})" in err
    # the review page shows the allowed source only; the refused file is never read for it
    sources = list((result.run_dir / "review" / "sources").iterdir())
    assert len(sources) == 1  # the red allowed source, not the blue refused one
    r, _, b = Image.open(sources[0]).convert("RGB").resize((1, 1)).getpixel((0, 0))
    assert r > 150 > 60 > b
    assert "outside the allowed roots" in (result.run_dir / "review.html").read_text()


def test_image_roots_in_the_spec_allow_the_other_folder(tmp_path: Path, ray_cluster,
                                                        capsys) -> None:
    spec_path, _ = make_job(tmp_path, extra="image_roots: [elsewhere]\n")
    result = run_job(load_job_spec(spec_path), DATE, progress=False, reports=False,
                     retry_backoff_s=0.05)
    assert (result.status, result.counts["done"]) == ("complete", 2)
    assert "outside its folder" not in capsys.readouterr().err


def test_the_catalog_root_is_the_folder_or_the_files_folder(tmp_path: Path) -> None:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "c.csv").write_text("product_id,image\n")
    assert catalog_root(tmp_path / "imgs") == str((tmp_path / "imgs").resolve())
    assert catalog_root(tmp_path / "c.csv") == str(tmp_path.resolve())
