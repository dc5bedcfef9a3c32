"""Loading weights in both published layouts (diffusers folders, BFL single files), the HF cache,
our native folder; errors for missing / truncated / mismatched checkpoints; fingerprints.

The checkpoints are written from one tiny native model: diffusers through its own save_pretrained,
BFL through the inverse of the key mapping applied to the diffusers files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from kontext_ckpt_helpers import BFL_SIDECAR, SIZE, TINY, write_bfl_folder, write_diffusers_folder
from kontext_ckpt_helpers import tiny_editor as make_tiny_editor
from PIL import Image
from safetensors.torch import load_file, save_file

from kontext_core import (
    CheckpointError,
    KontextEditor,
    ModelNotFoundError,
    model_fingerprint,
    resolve_model,
)
from kontext_core.checkpoint import TensorSource, read_state_dict, to_native, transformer_rules
from kontext_core.transformer import KontextTransformer

REPO = "black-forest-labs/FLUX.1-Kontext-dev"
SETTINGS = {k: BFL_SIDECAR[k] for k in ("name", "sampler", "resolution")}  # no shape fields
PROMPTS = ["make the background red", "turn the shoe blue"]
SEEDS = [5, 6]


@pytest.fixture(scope="module")
def native():
    return make_tiny_editor()


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))


def edit_bytes(editor: KontextEditor, image: Image.Image) -> list[bytes]:
    out = editor.edit([image, image], PROMPTS, SEEDS)
    return [im.tobytes() for im in out.images]


@pytest.fixture(scope="module")
def reference_output(native, image) -> list[bytes]:
    return edit_bytes(native, image)


@pytest.fixture(scope="module")
def diffusers_dir(tmp_path_factory, native) -> Path:
    root = write_diffusers_folder(tmp_path_factory.mktemp("ckpt") / "diffusers", native)
    (root / "kontext.json").write_text(json.dumps(SETTINGS))
    return root


@pytest.fixture(scope="module")
def sharded_dir(tmp_path_factory, native) -> Path:
    return write_diffusers_folder(tmp_path_factory.mktemp("ckpt") / "sharded", native, max_shard_size="40KB")


def bfl_states_from_diffusers(root: Path) -> tuple[dict, dict]:
    """Native-named state dicts computed from the diffusers files (the inverse of kontext_core.checkpoint.tables)."""
    from kontext_core.autoencoder import AutoEncoder
    from kontext_core.checkpoint import autoencoder_rules
    from kontext_core.config import AutoencoderConfig, TransformerConfig

    tf_cfg = TransformerConfig(**{**TINY["transformer"], "axes_dim": tuple(TINY["transformer"]["axes_dim"])})
    ae_cfg = AutoencoderConfig(**{**TINY["autoencoder"], "ch_mult": tuple(TINY["autoencoder"]["ch_mult"])})
    with torch.device("meta"):
        tf_shapes = {k: tuple(v.shape) for k, v in KontextTransformer(tf_cfg).state_dict().items()}
        ae_shapes = {k: tuple(v.shape) for k, v in AutoEncoder(ae_cfg).state_dict().items()}
    tf = read_state_dict(TensorSource([root / "transformer" / "diffusion_pytorch_model.safetensors"]))
    ae = read_state_dict(TensorSource([root / "vae" / "diffusion_pytorch_model.safetensors"]))
    return to_native(tf, transformer_rules(tf_cfg), tf_shapes), to_native(ae, autoencoder_rules(ae_cfg), ae_shapes)


@pytest.fixture(scope="module")
def bfl_dir(tmp_path_factory, diffusers_dir, native) -> Path:
    tf, ae = bfl_states_from_diffusers(diffusers_dir)
    return write_bfl_folder(tmp_path_factory.mktemp("ckpt") / "bfl", tf, ae, native.text)


def assert_same_weights(loaded: KontextEditor, native: KontextEditor) -> None:
    for mine, theirs in ((loaded.transformer, native.transformer), (loaded.autoencoder, native.autoencoder)):
        want = theirs.state_dict()
        got = mine.state_dict()
        assert set(got) == set(want)
        for key, value in want.items():
            assert torch.equal(got[key], value), key


def test_diffusers_folder_gives_the_native_weights_and_edits(diffusers_dir, native, image, reference_output):
    editor = KontextEditor.load(diffusers_dir)
    source = resolve_model(diffusers_dir)
    assert source.kind == "diffusers"
    assert editor.preset.transformer == native.preset.transformer
    assert editor.preset.autoencoder == native.preset.autoencoder
    assert editor.preset.text.t5_max_length == 16  # from tokenizer_2/tokenizer_config.json
    assert_same_weights(editor, native)
    assert edit_bytes(editor, image) == reference_output


def test_bfl_files_give_the_same_edits(bfl_dir, native, image, reference_output):
    source = resolve_model(bfl_dir)
    assert source.kind == "native"  # BFL keys + kontext.json
    assert source.transformer.format == source.autoencoder.format == "bfl"
    editor = KontextEditor.load(bfl_dir)
    assert_same_weights(editor, native)
    assert edit_bytes(editor, image) == reference_output


def test_bfl_transformer_with_comfy_prefix_and_file_path_spec(tmp_path, bfl_dir, native, image, reference_output):
    state = load_file(str(bfl_dir / "flux1-kontext-dev.safetensors"))
    root = write_bfl_folder(tmp_path / "comfy", state, load_file(str(bfl_dir / "ae.safetensors")), native.text,
                            prefix="model.diffusion_model.")
    os.rename(root / "flux1-kontext-dev.safetensors", root / "my-finetune.safetensors")
    assert all(k.startswith("model.diffusion_model.") for k in load_file(str(root / "my-finetune.safetensors")))
    for spec in (root, root / "my-finetune.safetensors"):
        editor = KontextEditor.load(spec)
        assert edit_bytes(editor, image) == reference_output


def test_diffusers_folder_without_kontext_json_takes_settings_from_its_configs(tmp_path, diffusers_dir):
    root = shutil.copytree(diffusers_dir, tmp_path / "plain")
    (root / "kontext.json").unlink()
    scheduler = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    scheduler["max_shift"] = 1.25
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    preset = resolve_model(root).preset
    assert preset.name == "plain"  # not the full-size flux.1-kontext-dev: the shapes differ
    assert preset.transformer.axes_dim == (4, 6, 6)  # from transformer/config.json
    assert (preset.autoencoder.scale_factor, preset.autoencoder.shift_factor, preset.autoencoder.norm_groups) == (
        0.8, 0.05, 8)  # from vae/config.json
    assert preset.sampler.max_shift == 1.25 and preset.sampler.steps == 28
    assert preset.resolution.kind == "kontext"


def test_sharded_diffusers_transformer(sharded_dir, native):
    index = json.loads((sharded_dir / "transformer" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) >= 3
    source = resolve_model(sharded_dir)
    assert {p.name for p in source.transformer.tensors.files} == shards
    (sharded_dir / "kontext.json").write_text(json.dumps(SETTINGS))
    try:
        assert_same_weights(KontextEditor.load(sharded_dir), native)
    finally:
        (sharded_dir / "kontext.json").unlink()


def make_hf_cache(hf_home: Path, source: Path, revision: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """An HF hub cache entry for REPO like huggingface_hub writes it: blobs + symlinked snapshot + refs."""
    repo_dir = hf_home / "hub" / f"models--{REPO.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir(parents=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


def test_hf_cache_snapshot_found_by_repo_id(tmp_path, monkeypatch, diffusers_dir, image, reference_output):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    snapshot = make_hf_cache(tmp_path / "hf", diffusers_dir)
    assert (snapshot / "transformer" / "config.json").is_symlink()
    editor = KontextEditor.load(REPO)
    assert resolve_model(REPO).root == snapshot
    assert edit_bytes(editor, image) == reference_output
    # The identity does not depend on where the files are (cache revision path vs plain folder).
    assert editor.fingerprint == model_fingerprint(diffusers_dir) == model_fingerprint(REPO)


def test_missing_model_says_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError) as err:
        KontextEditor.load(REPO)
    msg = str(err.value)
    assert str(tmp_path / "empty" / "hub" / "models--black-forest-labs--FLUX.1-Kontext-dev") in msg
    assert "refs/main" in msg and "flux1-kontext-dev.safetensors" in msg and "model_index.json" in msg
    with pytest.raises(ModelNotFoundError, match="ships no weights.*diffusers layout"):
        resolve_model("flux.1-kontext-dev")
    with pytest.raises(ModelNotFoundError, match="neither a known preset.*text_encoder_2/"):
        resolve_model(str(tmp_path / "no" / "such" / "folder"))


def test_folder_without_text_encoders_is_reported(tmp_path, bfl_dir):
    root = shutil.copytree(bfl_dir, tmp_path / "no_text")
    shutil.rmtree(root / "tokenizer_2")
    with pytest.raises(ModelNotFoundError, match="tokenizer_2 missing"):
        resolve_model(root)


def test_missing_shard_names_the_shard(tmp_path, sharded_dir):
    root = shutil.copytree(sharded_dir, tmp_path / "broken")
    index = root / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    shard = sorted(set(json.loads(index.read_text())["weight_map"].values()))[1]
    (root / "transformer" / shard).unlink()
    with pytest.raises(CheckpointError) as err:
        resolve_model(root)
    assert f"shard {shard} is missing" in str(err.value) and str(index) in str(err.value)


def test_truncated_file_names_the_file(tmp_path, bfl_dir):
    root = shutil.copytree(bfl_dir, tmp_path / "truncated")
    ae = root / "ae.safetensors"
    with ae.open("r+b") as f:
        f.truncate(ae.stat().st_size - 1000)
    with pytest.raises(CheckpointError) as err:
        KontextEditor.load(root)
    assert str(ae) in str(err.value) and "truncated" in str(err.value)


def test_shape_mismatch_names_file_key_and_shapes(tmp_path, bfl_dir):
    root = shutil.copytree(bfl_dir, tmp_path / "bad_shape")
    path = root / "flux1-kontext-dev.safetensors"
    state = load_file(str(path))
    state["double_blocks.1.img_attn.qkv.weight"] = state["double_blocks.1.img_attn.qkv.weight"][:95].clone()
    save_file(state, str(path))
    with pytest.raises(CheckpointError) as err:
        KontextEditor.load(root)
    msg = str(err.value)
    assert str(path) in msg and "'double_blocks.1.img_attn.qkv.weight'" in msg
    assert "(95, 32)" in msg and "expected (96, 32)" in msg


def test_diffusers_config_mismatch_names_file_key_and_shapes(tmp_path, diffusers_dir):
    root = shutil.copytree(diffusers_dir, tmp_path / "bad_config")
    config_path = root / "transformer" / "config.json"
    config = json.loads(config_path.read_text())
    config["joint_attention_dim"] = 48
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        KontextEditor.load(root)
    msg = str(err.value)
    assert str(root / "transformer" / "diffusion_pytorch_model.safetensors") in msg
    assert "'context_embedder.weight'" in msg and "(32, 32)" in msg and "expected (32, 48)" in msg


def test_missing_key_names_file_and_key(tmp_path, bfl_dir):
    root = shutil.copytree(bfl_dir, tmp_path / "missing_key")
    path = root / "flux1-kontext-dev.safetensors"
    state = load_file(str(path))
    del state["single_blocks.1.linear2.bias"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"flux1-kontext-dev\.safetensors: key 'single_blocks\.1\.linear2\.bias' is missing"):
        KontextEditor.load(root)


def test_text_encoder_with_missing_weights_is_an_error_not_a_random_init(tmp_path, bfl_dir):
    root = shutil.copytree(bfl_dir, tmp_path / "partial_t5")
    path = next((root / "text_encoder_2").glob("*.safetensors"))
    state = load_file(str(path))
    dropped = sorted(k for k in state if ".layer.1.DenseReluDense.wo." in k)
    assert dropped, sorted(state)[:10]
    save_file({k: v for k, v in state.items() if k not in dropped}, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError) as err:
        KontextEditor.load(root)
    msg = str(err.value)
    assert str(root / "text_encoder_2") in msg and "T5EncoderModel weights incomplete" in msg
    assert f"{len(dropped)} missing" in msg and "re-copy that folder" in msg


@pytest.mark.parametrize("key, value", [("shift_terminal", 0.02), ("use_karras_sigmas", True),
                                        ("time_shift_type", "linear")])
def test_scheduler_settings_our_sampler_lacks_are_refused(tmp_path, diffusers_dir, key, value):
    root = shutil.copytree(diffusers_dir, tmp_path / "odd_scheduler")
    path = root / "scheduler" / "scheduler_config.json"
    config = json.loads(path.read_text())
    assert config.get(key) != value
    path.write_text(json.dumps({**config, key: value}))
    with pytest.raises(CheckpointError) as err:
        resolve_model(root)
    assert str(path) in str(err.value) and f"{key}={value!r} is not supported" in str(err.value)


def test_t5_length_over_512_is_refused(tmp_path, diffusers_dir):
    root = shutil.copytree(diffusers_dir, tmp_path / "long_t5")
    sidecar = json.loads((root / "kontext.json").read_text())
    (root / "kontext.json").write_text(json.dumps({**sidecar, "text": {"t5_max_length": 1024}}))
    with pytest.raises(CheckpointError, match="t5_max_length 1024 is outside 1..512"):
        resolve_model(root)


def test_float16_is_refused_with_the_reason(bfl_dir):
    with pytest.raises(ValueError, match="float16 is not supported: FLUX.1 activations overflow"):
        KontextEditor.load(bfl_dir, dtype=torch.float16)


def test_kontext_json_fills_what_bfl_shapes_cannot_and_must_agree_with_them(tmp_path, bfl_dir):
    root = shutil.copytree(bfl_dir, tmp_path / "sidecar")
    (root / "kontext.json").unlink()
    with pytest.raises(CheckpointError, match="RoPE axes for head dim 16.*kontext.json"):
        resolve_model(root)
    (root / "kontext.json").write_text(json.dumps({"transformer": {"axes_dim": [4, 6, 6], "depth": 3}}))
    with pytest.raises(CheckpointError, match="transformer.depth is 3 but the weights .* have 2"):
        resolve_model(root)
    (root / "kontext.json").write_text(json.dumps({"transformer": {"axes_dim": [4, 6, 6]}}))
    preset = resolve_model(root).preset
    assert preset.transformer.depth == 2 and preset.transformer.depth_single_blocks == 2
    assert preset.transformer.hidden_size == 32 and preset.transformer.num_heads == 2
    assert preset.autoencoder.ch_mult == (1, 2) and preset.autoencoder.norm_groups == 32  # FLUX default


def test_native_folder_as_written_by_training(tmp_path, native, image, reference_output):
    root = tmp_path / "native"
    root.mkdir()
    (root / "kontext.json").write_text(json.dumps(native.preset.to_dict()))
    save_file(dict(native.transformer.state_dict()), str(root / "transformer.safetensors"))
    save_file(dict(native.autoencoder.state_dict()), str(root / "ae.safetensors"))
    native.text.save(root)
    editor = KontextEditor.load(root)
    assert resolve_model(root).kind == "native"
    assert editor.preset == native.preset
    assert edit_bytes(editor, image) == reference_output


def test_bf16_load_streams_and_runs(bfl_dir, native, image):
    editor = KontextEditor.load(bfl_dir, dtype=torch.bfloat16)
    for module, reference in ((editor.transformer, native.transformer), (editor.autoencoder, native.autoencoder)):
        for key, value in reference.state_dict().items():
            loaded = module.state_dict()[key]
            assert loaded.dtype == torch.bfloat16 and not loaded.is_meta
            assert torch.equal(loaded, value.to(torch.bfloat16)), key
    out = editor.edit([image], PROMPTS[:1], SEEDS[:1])
    assert out.images[0].size == SIZE and np.asarray(out.images[0]).std() > 10


def test_fingerprint_covers_every_file_of_the_layout(tmp_path, diffusers_dir):
    root = shutil.copytree(diffusers_dir, tmp_path / "fp")
    first = model_fingerprint(root)
    assert model_fingerprint(root) == first  # stable on reload
    names = {p.relative_to(root).as_posix() for p in resolve_model(root).files}
    assert {"model_index.json", "kontext.json", "scheduler/scheduler_config.json", "transformer/config.json",
            "vae/config.json", "text_encoder/config.json", "text_encoder_2/config.json"} <= names
    assert any(n.startswith("tokenizer/") for n in names) and any(n.startswith("tokenizer_2/") for n in names)

    tok_config = root / "tokenizer_2" / "tokenizer_config.json"
    original = tok_config.read_text()
    tok_config.write_text(json.dumps({**json.loads(original), "extra_note": 1}))
    assert model_fingerprint(root) != first
    tok_config.write_text(original)
    assert model_fingerprint(root) == first

    weights = root / "vae" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["decoder.conv_out.bias"] = state["decoder.conv_out.bias"] + 1e-3
    save_file(state, str(weights))
    assert model_fingerprint(root) != first


def test_loaded_weights_do_not_alias_the_files(tmp_path, bfl_dir, native):
    root = shutil.copytree(bfl_dir, tmp_path / "rewritten")
    editor = KontextEditor.load(root)
    path = root / "flux1-kontext-dev.safetensors"
    with path.open("r+b") as f:  # overwrite the tensor data in place (same inode, e.g. a re-export)
        header_len = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_len)
        f.write(bytes(path.stat().st_size - 8 - header_len))
    assert_same_weights(editor, native)
