"""The text phase apart: a run encodes each unique instruction once (one T5 + CLIP actor, before
the editors load, which load without text encoders), stores the embeddings, and a re-run with
other rows but the same instructions encodes nothing; the report shows the phase's seconds and
cost."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pipeline_helpers import (
    TEST_MODEL,
    make_manifest,
    read_records,
    rewrite_manifest,
    short_tmp,
    start_ray,
)

from pipeline.runner import RunConfig, run_batch
from pipeline.text_phase import EMBEDDING_EXT, ENCODE_LOG_ENV

LOG = Path(short_tmp("kbtext")) / "encoded.txt"


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray

    os.environ[ENCODE_LOG_ENV] = str(LOG)  # the actors inherit it from the local Ray
    start_ray(num_cpus=2)
    yield
    ray.shutdown()
    os.environ.pop(ENCODE_LOG_ENV, None)


def _config(manifest: Path, out: Path, **kw) -> RunConfig:
    base = dict(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu", batch_size=4,
                actors=1, reports=True, progress=False, retry_backoff_s=0.05, steps=2)
    return RunConfig(**{**base, **kw})


def _encoded() -> list[str]:
    return LOG.read_text().splitlines() if LOG.exists() else []


def _phase(summary) -> list[dict]:
    return [r for r in read_records(summary.run_dir) if r["type"] == "text-phase"]


def test_each_instruction_is_encoded_once_and_reused_by_a_rerun(tmp_path: Path) -> None:
    LOG.unlink(missing_ok=True)
    manifest = make_manifest(tmp_path / "m", products=3, variants=2)  # 6 rows, 2 instructions
    out = tmp_path / "out"
    first = run_batch(_config(manifest, out))
    assert first.exit_code == 0 and first.counts["done"] == 6
    texts = sorted({"put the product on background number 0", "put the product on background number 1"})
    assert sorted(_encoded()) == texts  # once per unique text, not per row or per batch
    (phase,) = _phase(first)
    assert (phase["texts"], phase["encoded"], phase["reused"]) == (2, 2, 0)
    assert phase["load_start"] <= phase["load_end"] <= phase["start"] <= phase["end"] <= phase["stop"]
    stored = list((out / "store" / "objects").rglob(f"*.{EMBEDDING_EXT}"))
    assert len(stored) == 2
    # the editors never had T5: every ok row's text_encode is the lookup of given embeddings
    ok = [r for r in read_records(first.run_dir) if r["type"] == "attempt" and r["outcome"] == "ok"]
    assert len(ok) == 6

    # The stored output is what the model makes for that row alone, encoding its text itself.
    from kontext_core import KontextEditor

    row = pq.read_table(first.results).to_pylist()[3]
    source = Image.open(manifest.parent / row["image"]).convert("RGB")
    editor = KontextEditor.load(TEST_MODEL)
    expected = np.asarray(editor.edit([source], [row["instruction"]], [row["seed"]], steps=2).images[0])
    got = np.asarray(Image.open(io.BytesIO(Path(row["output_uri"]).read_bytes())).convert("RGB"))
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1

    # New seeds (new keys, so the model runs again) with the same instructions: nothing encoded.
    rewrite_manifest(manifest, seed={i: 5000 + i for i in range(6)})
    second = run_batch(_config(manifest, out))
    assert second.exit_code == 0 and second.counts["done"] == 6
    assert sorted(_encoded()) == texts
    (again,) = _phase(second)
    assert (again["encoded"], again["reused"], again["actor"]) == (0, 2, None)

    # The report shows the phase: its seconds and its cost, inside the total.
    report = json.loads((first.run_dir / "report.json").read_text())
    text = report["figures"]["text_phase"]
    assert (text["texts"], text["encoded"], text["reused"]) == (2, 2, 0)
    assert text["encode_seconds"] == pytest.approx(phase["seconds"], abs=1e-6)
    assert text["held_seconds"] == pytest.approx(phase["stop"] - phase["load_start"], abs=1e-6)
    assert text["cost"] > 0 and text["cost"] < report["figures"]["cost"]["total"]
    assert "text-encoder" in {a["actor"] for a in report["figures"]["actors"]}
    markdown = (first.run_dir / "report.md").read_text()
    assert "## Text phase" in markdown and "2 unique: 2 encoded, 0 reused from the store" in markdown
    assert "## Memory" in markdown and "resident" in markdown
