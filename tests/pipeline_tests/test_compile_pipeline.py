"""--compile through the pipeline: the exact path compiled in each actor, same keys and pixels
(up to rounding) as eager, compiled kernels written to the on-disk cache the actors share."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_helpers import TEST_MODEL, make_manifest, start_ray

from pipeline import cli
from pipeline.runner import RunConfig, run_batch


@pytest.fixture(scope="module", autouse=True)
def ray_cluster(tmp_path_factory):
    import ray

    # set before Ray starts, so the actors (spawned by the raylet) inherit it
    cache = tmp_path_factory.mktemp("compile-cache")
    old = os.environ.get("KONTEXT_COMPILE_CACHE")
    os.environ["KONTEXT_COMPILE_CACHE"] = str(cache)
    start_ray(num_cpus=2)
    yield cache
    ray.shutdown()
    if old is None:
        os.environ.pop("KONTEXT_COMPILE_CACHE", None)
    else:
        os.environ["KONTEXT_COMPILE_CACHE"] = old


def _config(manifest: Path, out: Path, **kw) -> RunConfig:
    base = dict(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu", batch_size=4,
                actors=1, reports=False, progress=False, retry_backoff_s=0.05, steps=3)
    base.update(kw)
    return RunConfig(**base)


def test_compiled_run_has_the_eager_keys_and_pixels_and_fills_the_disk_cache(tmp_path: Path, ray_cluster) -> None:
    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    eager = run_batch(_config(manifest, tmp_path / "eager"))
    compiled = run_batch(_config(manifest, tmp_path / "compiled", compile=True))
    assert eager.exit_code == 0 and compiled.exit_code == 0 and compiled.counts["done"] == 4
    assert compiled.run_id == eager.run_id  # the exact path: same run identity
    eager_rows = pq.read_table(eager.results).to_pylist()
    compiled_rows = pq.read_table(compiled.results).to_pylist()
    assert [r["key"] for r in compiled_rows] == [r["key"] for r in eager_rows]
    for a, b in zip(eager_rows, compiled_rows, strict=True):
        diff = np.abs(np.asarray(Image.open(a["output_uri"]), dtype=np.int16)
                      - np.asarray(Image.open(b["output_uri"]), dtype=np.int16))
        assert diff.max() <= 1  # same pixels up to floating-point rounding
    assert json.loads((compiled.run_dir / "config.json").read_text())["settings"]["compile"] is True
    assert any(p.is_file() for p in Path(ray_cluster).rglob("*"))  # compiled artefacts on disk


def test_cli_parses_compile_off_by_default() -> None:
    parser = cli.build_parser()
    assert parser.parse_args(["run", "m.parquet", "--out", "o", "--compile"]).compile is True
    assert parser.parse_args(["run", "m.parquet", "--out", "o"]).compile is False
