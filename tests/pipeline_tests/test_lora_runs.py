"""Runs with LoRA adapters on tiny-random: --lora changes the pixels to exactly what
kontext_core's edit(loras=) makes and keys them apart; a manifest's lora column with two adapter
sets loads the base model once per actor, reads each adapter once and sends every batch with one
set; a row's bad adapter fails that row alone (bad-row, with the reason)."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from lora_pipeline_helpers import write_other_model_lora, write_tiny_random_lora
from PIL import Image
from pipeline_helpers import TEST_MODEL, loads, make_manifest, ok_counts, start_ray

from pipeline.runner import RunConfig, run_batch


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    import ray
    from ray import cloudpickle

    start_ray(num_cpus=2)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    yield
    ray.shutdown()


def _config(manifest: Path, out: Path, **kw: Any) -> RunConfig:
    base = dict(manifest=str(manifest), out=str(out), model=TEST_MODEL, device="cpu", batch_size=4,
                actors=1, reports=False, progress=False, retry_backoff_s=0.05, steps=2)
    return RunConfig(**{**base, **kw})


def _rows(summary) -> list[dict]:
    return pq.read_table(summary.results).to_pylist()


def _pixels(uri: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(Path(uri).read_bytes())).convert("RGB")).astype(int)


class LoggingFactory:
    """Loads the real editor (one marker per load) and logs each edit call: its rows and the
    adapters it was given (fingerprint, object id: one id per file means it was read once)."""

    def __init__(self, marker_dir: Path) -> None:
        self.marker_dir = str(marker_dir)

    def __call__(self, model: str, device: str, dtype: Any) -> Any:
        from kontext_core import KontextEditor

        folder = Path(self.marker_dir)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"load-{os.getpid()}-{time.time_ns()}").touch()
        editor = KontextEditor.load(model, device=device, dtype=dtype)
        edit = editor.edit

        def logged(images, instructions, seeds, steps=None, guidance=None, size=None, step_cache=None,
                   loras=None, lora_mode="unfused", embeddings=None):
            entry = {"pid": os.getpid(), "rows": len(images), "mode": lora_mode,
                     "loras": None if loras is None else [[a.fingerprint, id(a), s] for a, s in loras]}
            (folder / f"call-{os.getpid()}-{time.time_ns()}.json").write_text(json.dumps(entry))
            return edit(images, instructions, seeds, steps=steps, guidance=guidance, size=size,
                        step_cache=step_cache, loras=loras, lora_mode=lora_mode, embeddings=embeddings)

        editor.edit = logged
        return editor


def _calls(marker_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(marker_dir.glob("call-*.json"))]


def test_lora_flag_changes_pixels_to_kontext_cores_and_keys_them_apart(tmp_path: Path) -> None:
    from kontext_core import KontextEditor
    from kontext_core.lora import load_lora

    lora = write_tiny_random_lora(tmp_path / "loras" / "style.safetensors", seed=5)
    manifest = make_manifest(tmp_path / "m", products=2, variants=1)
    out = tmp_path / "out"
    base = run_batch(_config(manifest, out))
    styled = run_batch(_config(manifest, out, loras=[f"{lora}:0.8"]))
    assert base.exit_code == 0 and styled.exit_code == 0
    assert styled.counts["done"] == 2 and styled.run_id != base.run_id
    base_rows, styled_rows = _rows(base), _rows(styled)
    assert not {r["key"] for r in base_rows} & {r["key"] for r in styled_rows}
    editor = KontextEditor.load(TEST_MODEL)
    adapter = load_lora(lora)
    for plain, row in zip(base_rows, styled_rows, strict=True):
        got = _pixels(row["output_uri"])
        assert np.abs(got - _pixels(plain["output_uri"])).max() > 3  # the adapter shows
        source = Image.open(manifest.parent / row["image"]).convert("RGB")
        expected = np.asarray(editor.edit([source], [row["instruction"]], [row["seed"]], steps=2,
                                          loras=[(adapter, 0.8)]).images[0]).astype(int)
        assert np.abs(got - expected).max() <= 1  # kontext_core's own LoRA edit (up to rounding)
    settings = json.loads((styled.run_dir / "config.json").read_text())["settings"]
    assert settings["loras"] == [f"{lora}:0.8"]
    assert settings["lora"]["adapters"] == [{"path": str(lora), "sha256": adapter.fingerprint, "scale": 0.8}]
    # The same command again: same keys, all cache hits; without --lora the base keys hit too.
    again = run_batch(_config(manifest, out, loras=[f"{lora}:0.8"]))
    assert again.counts.get("cache-hit", 0) == 2 and again.run_id.startswith(styled.run_id)
    plain_again = run_batch(_config(manifest, out))
    assert {r["key"] for r in _rows(plain_again)} == {r["key"] for r in base_rows}
    assert plain_again.counts.get("cache-hit", 0) == 2


def test_two_adapter_sets_load_the_base_once_and_batch_rows_by_set(tmp_path: Path) -> None:
    loras = tmp_path / "m" / "loras"
    write_tiny_random_lora(loras / "a.safetensors", seed=1)
    write_tiny_random_lora(loras / "b.safetensors", seed=2)
    sets = [["loras/a.safetensors"], ["loras/b.safetensors:0.5", "loras/a.safetensors"], None]
    column = [sets[i % 3] for i in range(12)]  # interleaved: the plan must group them
    manifest = make_manifest(tmp_path / "m", products=4, variants=3, lora=column)
    markers = tmp_path / "markers"
    summary = run_batch(_config(manifest, tmp_path / "out", batch_size=8),
                        editor_factory=LoggingFactory(markers))
    assert summary.exit_code == 0 and summary.counts["done"] == 12
    assert loads(markers) == 1  # the base model: once for the one actor
    calls = _calls(markers)
    per_set = {}
    for call in calls:  # each model call holds one set: 4 rows each (3 sets x 4 rows, cap 8)
        names = tuple(sorted((f, s) for f, _, s in call["loras"] or []))
        per_set[names] = per_set.get(names, 0) + call["rows"]
    assert sorted(per_set.values()) == [4, 4, 4] and len(calls) == 3
    ids = {}
    for call in calls:
        for fingerprint, ident, _ in call["loras"] or []:
            ids.setdefault(fingerprint, set()).add(ident)
    assert len(ids) == 2 and all(len(v) == 1 for v in ids.values())  # each file read once
    rows = _rows(summary)
    keys_by_set = {}
    for i, row in enumerate(rows):
        keys_by_set.setdefault(i % 3, set()).add(row["key"])
    assert len(set().union(*keys_by_set.values())) == 12  # sets and sources key apart


def test_a_rows_bad_adapter_fails_that_row_alone(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    write_tiny_random_lora(folder / "good.safetensors", seed=1)
    write_other_model_lora(folder / "other.safetensors")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.safetensors").write_text("not a tensor file")
    column = [["good.safetensors"], ["gone.safetensors"], ["notes.safetensors"],
              ["other.safetensors"], ["good.safetensors:strong"], None]
    manifest = make_manifest(folder, products=6, variants=1, lora=column)
    summary = run_batch(_config(manifest, tmp_path / "out"))
    assert summary.exit_code == 1
    rows = _rows(summary)
    assert [r["status"] for r in rows] == ["done", "failed", "failed", "failed", "failed", "done"]
    failed = {r["row_id"]: r for r in rows if r["status"] == "failed"}
    assert {r["error_class"] for r in failed.values()} == {"bad-row"}
    reasons = [failed[f"p{i}-v0"]["reason"] for i in (1, 2, 3, 4)]
    for reason, says in zip(reasons, ["file not found", "is not a safetensors file",
                                      "is for another model", "is not a finite number"], strict=True):
        assert "LoRA " in reason and says in reason and "Fix:" in reason, reason
    assert sum(ok_counts(summary.run_dir).values()) == 2  # only the good rows reached the model


def test_report_verify_recomputes_the_keys_of_rows_with_adapters(tmp_path: Path, capsys) -> None:
    from pipeline import cli

    run_lora = write_tiny_random_lora(tmp_path / "run.safetensors", seed=4)
    write_tiny_random_lora(tmp_path / "m" / "row.safetensors", seed=6)
    manifest = make_manifest(tmp_path / "m", products=2, variants=1, lora=[None, ["row.safetensors:0.5"]])
    summary = run_batch(_config(manifest, tmp_path / "out", reports=True, loras=[f"{run_lora}:0.8"]))
    assert summary.exit_code == 0 and summary.counts["done"] == 2
    assert cli.main(["report", str(summary.run_dir), "--verify"]) == 0
    assert "2 key(s) recomputed from their sources" in capsys.readouterr().out


def test_fused_mode_and_fp8_weights_apply_adapters_keyed_apart(tmp_path: Path) -> None:
    lora = write_tiny_random_lora(tmp_path / "style.safetensors", seed=5)
    manifest = make_manifest(tmp_path / "m", products=1, variants=2)
    out = tmp_path / "out"
    unfused = run_batch(_config(manifest, out, loras=[str(lora)]))
    fused = run_batch(_config(manifest, out, loras=[str(lora)], lora_mode="fused"))
    fp8_plain = run_batch(_config(manifest, out, fp8=True))
    fp8_lora = run_batch(_config(manifest, out, fp8=True, loras=[str(lora)]))  # unfused on fp8 layers
    runs = [unfused, fused, fp8_plain, fp8_lora]
    assert [r.exit_code for r in runs] == [0] * 4 and all(r.counts["done"] == 2 for r in runs)
    keys = [{row["key"] for row in _rows(r)} for r in runs]
    assert len(set().union(*keys)) == 8  # the mode and fp8 are each in the key
    for a, b in zip(_rows(unfused), _rows(fused), strict=True):  # the same edit, other rounding
        assert np.abs(_pixels(a["output_uri"]) - _pixels(b["output_uri"])).max() <= 2
    for a, b in zip(_rows(fp8_plain), _rows(fp8_lora), strict=True):  # the adapter shows on fp8
        assert np.abs(_pixels(a["output_uri"]) - _pixels(b["output_uri"])).max() > 3
