"""LoRA adapters in the cache key (the file's bytes and the scale, nothing else; rows without
adapters keep their keys) and every bad adapter named before work: --lora and sampler.loras stop
the run (exit 2), a manifest's lora cell fails its row's validation. No Ray here."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from lora_pipeline_helpers import write_other_model_lora, write_tiny_random_lora
from pipeline_helpers import TEST_MODEL, make_manifest

from jobs.spec import SpecError, load_job_spec
from manifests.validate import validate_manifest
from pipeline import cli
from pipeline.cache import ModelSettings, RowSettings, cache_key, key_document
from pipeline.encode import shared_output_spec
from pipeline.errors import ConfigError
from pipeline.loras import make_resolver

MODEL = ModelSettings(model_fingerprint="f" * 64, dtype="float32")


def _key(loras) -> str:
    row = RowSettings(4, 2.5, None, shared_output_spec("png"), loras.key if loras else None)
    return cache_key("a" * 64, "put it on white", 7, MODEL, row)


def _resolver(tmp_path: Path, mode: str = "unfused"):
    return make_resolver(TEST_MODEL, mode, str(tmp_path / "manifest.parquet"), None, False, "native")


def test_rows_without_adapters_keep_the_key_document_they_had() -> None:
    doc = key_document("a" * 64, "x", 1, MODEL, RowSettings(4, 2.5, None, shared_output_spec("png")))
    assert set(doc) == {"schema", "image", "instruction", "seed", "model", "steps", "guidance", "size",
                        "dtype", "approximations", "output", "numerics", "decode"}
    assert _key(None) == cache_key("a" * 64, "put it on white", 7, MODEL,
                                   RowSettings(4, 2.5, None, shared_output_spec("png"), None))


def test_key_follows_the_files_bytes_and_scale_not_its_name_or_order(tmp_path: Path) -> None:
    a = write_tiny_random_lora(tmp_path / "a.safetensors", seed=1)
    write_tiny_random_lora(tmp_path / "b.safetensors", seed=2)
    shutil.copy(a, tmp_path / "copy-of-a.safetensors")
    resolver = _resolver(tmp_path)
    key = _key(resolver.for_row(["a.safetensors"]))
    assert key != _key(None)
    assert _key(resolver.for_row(["a.safetensors:1"])) == key  # the default scale is 1
    assert _key(resolver.for_row([str(a)])) == key  # absolute or relative to the manifest
    assert _key(resolver.for_row(["copy-of-a.safetensors"])) == key  # same bytes, other name
    assert _key(resolver.for_row(["b.safetensors"])) != key  # other bytes
    assert _key(resolver.for_row(["a.safetensors:0.5"])) != key  # other scale
    both = _key(resolver.for_row(["a.safetensors", "b.safetensors:0.5"]))
    assert both == _key(resolver.for_row(["b.safetensors:0.5", "a.safetensors"]))  # order: no
    assert both not in (key, _key(resolver.for_row(["b.safetensors:0.5"])))
    assert _key(_resolver(tmp_path, "fused").for_row(["a.safetensors"])) != key  # the mode: yes
    assert resolver.for_row([]) is None and _key(resolver.for_row([])) == _key(None)  # () = base
    assert resolver.for_row(None) is None  # null cell: the run's set (none here)
    # The same path rewritten with other bytes (new weights under the old name): a new key.
    write_tiny_random_lora(a, seed=3)
    assert _key(resolver.for_row(["a.safetensors"])) != key


def test_the_runs_adapters_reach_every_row_and_the_run_identity(tmp_path: Path) -> None:
    a = write_tiny_random_lora(tmp_path / "a.safetensors", seed=1)
    resolver = make_resolver(TEST_MODEL, "unfused", None, [f"{a}:0.8"], False, "native")
    assert resolver.for_row(None) is resolver.run and resolver.run.adapters[0].scale == 0.8
    assert resolver.for_row([]) is None  # a row's empty cell: the base model for that row


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """kind -> (spec, what the message must say)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "notes.safetensors").write_text("not a tensor file")
    write_other_model_lora(tmp_path / "other.safetensors")
    write_tiny_random_lora(tmp_path / "good.safetensors", seed=1)
    return {
        "missing": (str(tmp_path / "gone.safetensors"), "file not found"),
        "not-lora": (str(tmp_path / "notes.safetensors"), "is not a safetensors file"),
        "mismatch": (str(tmp_path / "other.safetensors"), "is for another model"),
        "bad-scale": (f"{tmp_path / 'good.safetensors'}:strong", "is not a finite number"),
    }


@pytest.mark.parametrize("kind", ["missing", "not-lora", "mismatch", "bad-scale"])
def test_a_bad_lora_flag_stops_the_run_before_any_work(tmp_path: Path, capsys, kind: str) -> None:
    spec, says = _bad_inputs(tmp_path)[kind]
    manifest = make_manifest(tmp_path / "m", products=1, variants=1)
    out = tmp_path / "out"
    code = cli.main(["run", str(manifest), "--out", str(out), "--model", TEST_MODEL, "--device", "cpu",
                     "--lora", spec, "--quiet", "--no-report"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--lora: LoRA " in err and says in err and "Fix:" in err and "Traceback" not in err
    assert not (out / "runs").exists()  # nothing was started


def test_fused_mode_on_fp8_weights_is_refused_before_work(tmp_path: Path) -> None:
    a = write_tiny_random_lora(tmp_path / "a.safetensors", seed=1)
    with pytest.raises(ConfigError, match="--lora-mode fused cannot write adapters into fp8 weights"):
        make_resolver(TEST_MODEL, "fused", None, [str(a)], True, "native")
    with pytest.raises(ConfigError, match="'sideways' is not one of unfused, fused"):
        make_resolver(TEST_MODEL, "sideways", None, [str(a)], False, "native")


def test_cli_lora_flags_repeat_and_default_to_none() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["run", "m.parquet", "--lora", "a.safetensors:0.5", "--lora", "b.safetensors",
                              "--lora-mode", "fused"])
    assert (args.loras, args.lora_mode) == (["a.safetensors:0.5", "b.safetensors"], "fused")
    plain = parser.parse_args(["run", "m.parquet"])
    assert (plain.loras, plain.lora_mode) == (None, "unfused")


def _spec(folder: Path, sampler: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.parquet").write_bytes(b"not read by validation")
    path = folder / "job.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: nightly
        manifest: m.parquet
        model: kontext-tiny
        output: out
        sampler: {sampler}
        """))
    return path


def test_job_sampler_loras_resolve_against_the_spec_and_bad_ones_are_named(tmp_path: Path) -> None:
    a = write_tiny_random_lora(tmp_path / "job" / "loras" / "a.safetensors", seed=1)
    spec = load_job_spec(_spec(tmp_path / "job", "{loras: [loras/a.safetensors:0.5], lora_mode: fused}"))
    assert spec.sampler.loras == (f"{a}:0.5",) and spec.sampler.lora_mode == "fused"
    bad = _bad_inputs(tmp_path / "bad")
    entries = ", ".join(bad[k][0] for k in ("missing", "not-lora", "bad-scale"))
    with pytest.raises(SpecError) as info:
        load_job_spec(_spec(tmp_path / "job2", f"{{loras: [{entries}], lora_mode: sideways}}"))
    problems = [(p.key, p.message) for p in info.value.problems]
    assert [k for k, _ in problems].count("sampler.loras") == 3
    for kind in ("missing", "not-lora", "bad-scale"):
        assert any(bad[kind][1] in m for k, m in problems if k == "sampler.loras"), kind
    assert any(k == "sampler.lora_mode" for k, _ in problems)


def test_manifest_lora_column_takes_lists_or_semicolon_strings(tmp_path: Path) -> None:
    base = {"image": ["a.png"] * 5, "instruction": ["x"] * 5, "seed": [0, 1, 2, 3, 4]}
    (tmp_path / "a.png").write_bytes(b"")
    lists = tmp_path / "lists.parquet"
    pd.DataFrame({**base, "lora": [["a.safetensors:0.5", " b.safetensors"], [], None, ["x"], [""]]}
                 ).to_parquet(lists, index=False)
    _, problems = validate_manifest(lists)
    assert [(p.row, p.column) for p in problems] == [(4, "lora")]
    assert "holds an empty adapter" in problems[0].reason
    text = tmp_path / "text.parquet"
    pd.DataFrame({**base, "lora": ["a.safetensors:0.5; b.safetensors", "", None, "x", "a;;b"]}
                 ).to_parquet(text, index=False)
    _, problems = validate_manifest(text)
    assert [(p.row, p.column) for p in problems] == [(4, "lora")]
    numbers = tmp_path / "numbers.parquet"
    pd.DataFrame({**base, "lora": [1, 2, 3, 4, 5]}).to_parquet(numbers, index=False)
    _, problems = validate_manifest(numbers)
    assert [(p.row, p.column) for p in problems] == [(None, "lora")]
    assert "path[:scale]" in problems[0].reason


def test_manifest_rows_carry_their_specs(tmp_path: Path) -> None:
    from manifests.validate import iter_rows

    base = {"image": ["a.png"] * 3, "instruction": ["x"] * 3, "seed": [0, 1, 2]}
    path = tmp_path / "m.parquet"
    pd.DataFrame({**base, "lora": ["a.safetensors:0.5; b.safetensors", "", None]}).to_parquet(path, index=False)
    rows = [r for batch in iter_rows(path) for r in batch]
    assert [r.lora for r in rows] == [("a.safetensors:0.5", "b.safetensors"), (), None]
