"""Bad LoRA input: each a LoraError naming the file, the reason and the fix, with a kind the
pipeline maps to a whole-run error (before work) or a row failure. The model is never touched."""

from __future__ import annotations

import pytest
import torch
from diffusers import FluxTransformer2DModel
from kontext_ckpt_helpers import tiny_editor
from lora_helpers import write_kohya_lora, write_peft_lora
from safetensors.torch import save_file

from kontext_core.lora import (
    LoraError,
    active_loras,
    check_loras,
    load_lora,
    parse_lora_spec,
    set_loras,
)
from kontext_core.lora.errors import BAD_SCALE, MISMATCH, MISSING, NOT_LORA, UNSUPPORTED


def assert_error(info: pytest.ExceptionInfo, kind: str, path, *fragments: str) -> None:
    err = info.value
    assert isinstance(err, LoraError) and isinstance(err, ValueError)
    assert err.kind == kind
    text = str(err)
    assert text.startswith(f"LoRA {path}") and "Fix: " in text and err.fix and err.reason
    for fragment in fragments:
        assert fragment in text, text


def test_missing_file(tmp_path):
    with pytest.raises(LoraError) as info:
        load_lora(tmp_path / "nope.safetensors")
    assert_error(info, MISSING, tmp_path / "nope.safetensors", "file not found", "check the path")


def test_not_safetensors(tmp_path):
    path = tmp_path / "notes.safetensors"
    path.write_text("these are not tensors")
    with pytest.raises(LoraError) as info:
        load_lora(path)
    assert_error(info, NOT_LORA, path, "is not a safetensors file")


def test_model_checkpoint_is_not_a_lora(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_editor().transformer.state_dict().items()}, str(path))
    with pytest.raises(LoraError) as info:
        load_lora(path)
    assert_error(info, NOT_LORA, path, "a model checkpoint, not a LoRA", "--model")


def test_pickle_file_is_refused_unread(tmp_path):
    path = tmp_path / "old.bin"
    path.write_bytes(b"\x80\x04not read")
    with pytest.raises(LoraError) as info:
        load_lora(path)
    assert_error(info, UNSUPPORTED, path, "pickles", ".safetensors")


@pytest.mark.parametrize(("keys", "what"), [
    ({"lora_unet_double_blocks_0_img_attn_qkv.lokr_w1": (4, 4)}, "LoKr"),
    ({"transformer.x_embedder.lora_A.weight": (4, 16), "transformer.x_embedder.lora_magnitude_vector": (32,)}, "DoRA"),
    ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 32),
      "lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": (64, 4)}, "text-encoder"),
    ({"double_blocks.0.img_attn.qkv.lora_A.weight": (4, 32), "double_blocks.0.img_attn.qkv.lora_B.weight": (96, 4),
      "double_blocks.0.img_attn.norm.query_norm.scale": (16,)}, "Control LoRA"),
])
def test_unsupported_variants(tmp_path, keys, what):
    path = tmp_path / "variant.safetensors"
    save_file({k: torch.zeros(shape) for k, shape in keys.items()}, str(path))
    with pytest.raises(LoraError) as info:
        load_lora(path)
    assert_error(info, UNSUPPORTED, path, what)


def test_unknown_layer_names(tmp_path):
    path = tmp_path / "sdxl.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(path))
    with pytest.raises(LoraError) as info:
        load_lora(path)
    assert_error(info, MISMATCH, path, "no FLUX transformer has", "lora_unet_down_blocks_0")


def wide_model_lora(tmp_path):
    """A diffusers LoRA for a FLUX of width 64 (the tiny model is 32 wide)."""
    other = FluxTransformer2DModel(num_layers=2, num_single_layers=2, attention_head_dim=32, num_attention_heads=2,
                                   joint_attention_dim=32, pooled_projection_dim=32, in_channels=16,
                                   axes_dims_rope=(4, 14, 14), guidance_embeds=True)
    return load_lora(write_peft_lora(tmp_path / "wide", other, seed=1))


def test_lora_for_another_model_shape_mismatch(tmp_path):
    adapter = wide_model_lora(tmp_path)
    editor = tiny_editor()
    before = {k: v.clone() for k, v in editor.transformer.state_dict().items()}
    for mode in ("unfused", "fused"):
        with pytest.raises(LoraError) as info:
            set_loras(editor.transformer, [(adapter, 1.0)], mode)
        assert_error(info, MISMATCH, adapter.path, "is for another model", "the LoRA's factors are", "trained for this model")
    assert active_loras(editor.transformer) == ()
    assert sum(len(m._forward_hooks) for m in editor.transformer.modules()) == 0
    assert all(torch.equal(v, before[k]) for k, v in editor.transformer.state_dict().items())
    # the driver's check, before any work and without weights
    with pytest.raises(LoraError) as info:
        check_loras([(adapter, 1.0)], editor.preset.transformer)
    assert_error(info, MISMATCH, adapter.path, "is for another model")


def test_lora_for_a_deeper_model_names_missing_block(tmp_path):
    layers = {"double_blocks.7.img_attn.proj": (32, 32)}
    path = write_kohya_lora(tmp_path / "deep.safetensors", seed=1, layers=layers)
    with pytest.raises(LoraError) as info:
        check_loras([(load_lora(path), 1.0)], tiny_editor().preset.transformer)
    assert_error(info, MISMATCH, path, "no layer 'double_blocks.7.img_attn.proj'")


@pytest.mark.parametrize("scale", ["abc", "nan", "inf", None, True, ""])
def test_scale_not_a_number(tmp_path, scale):
    adapter = load_lora(write_kohya_lora(tmp_path / "k.safetensors", seed=1))
    with pytest.raises(LoraError) as info:
        set_loras(tiny_editor().transformer, [(adapter, scale)])
    assert_error(info, BAD_SCALE, adapter.path, "is not a finite number", "path[:scale]")


def test_spec_parsing():
    spec = parse_lora_spec("style.safetensors:0.8")
    assert (spec.path, spec.scale) == ("style.safetensors", 0.8)
    assert parse_lora_spec("loras/style.safetensors").scale == 1.0
    assert parse_lora_spec("s3://bucket/loras/a.safetensors").path == "s3://bucket/loras/a.safetensors"
    assert parse_lora_spec("C:\\loras\\a.safetensors").path == "C:\\loras\\a.safetensors"
    assert parse_lora_spec("s3://bucket/a.safetensors:-0.5").scale == -0.5
    with pytest.raises(LoraError) as info:
        parse_lora_spec("style.safetensors:strong")
    assert_error(info, BAD_SCALE, "style.safetensors", "'strong' is not a finite number")
