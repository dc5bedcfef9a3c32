"""Users' quantized downloads load as stored: GGUF (per-layer dequantization at run time) and
ComfyUI's fp8 scaled safetensors; parity with diffusers' GGUF loading on the same files.

Tolerances (measured on this tiny model, set ~2-5x above what was measured):
- our dequantizers vs the gguf package's: identical bytes -> identical float32 values;
- transformer forward vs diffusers' GGUF loading, same file, float32 compute: rel. error <= 2e-3
  (measured 2e-4 .. 9e-4: diffusers rounds dequantized weights to float16, we keep float32);
- whole edits, GGUF vs the float32 file it was made from (4 steps, 48x32, max abs over pixels):
  Q8_0 <= 3 levels (measured 1), Q6_K <= 10 (5), Q5_K <= 16 (9), Q4_K / Q4_0 <= 32 (18 / 15);
  ComfyUI-style fp8 scaled <= 12 (6). The test's K quantizer is plain round-to-nearest; the
  published files (llama.cpp's search) are closer to their source than this.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest
import torch
from diffusers import FluxTransformer2DModel, GGUFQuantizationConfig
from diffusers.loaders import single_file_model
from diffusers.quantizers.gguf.utils import GGUFParameter
from gguf_helpers import QUANT_TYPES, T, quantize, write_gguf
from quant_helpers import (
    INSTRUCTION,
    comfy_fp8_state,
    max_level_diff,
    source_image,
    wide_state,
    write_diffusers_config,
    write_wide_folder,
)
from safetensors.torch import load_file, save_file
from test_parity_diffusers import kontext_inputs, rel

from kontext_core.checkpoint import CheckpointError, to_diffusers, transformer_rules
from kontext_core.editor import KontextEditor
from kontext_core.quant import ggml
from kontext_core.quant.layers import CastLinear, GGUFLinear

REQUIRED = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0")
IMAGE_TOLERANCE = {"Q8_0": 3, "Q6_K": 10, "Q5_K": 16, "Q4_K": 32, "Q4_0": 32}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = write_wide_folder(tmp_path_factory.mktemp("wide"))
    _, transformer, _, _ = wide_state()
    for qtype in REQUIRED:
        write_gguf(root / f"kontext-{qtype}.gguf", transformer.state_dict(), qtype)
    return root


@pytest.fixture(scope="module")
def reference_image(folder):
    editor = KontextEditor.load(folder / "flux1-kontext-dev.safetensors")
    return editor.edit([source_image()], [INSTRUCTION], [1]).images[0]


@pytest.mark.parametrize("qtype", QUANT_TYPES)
def test_dequantizers_match_the_gguf_package(qtype):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((5, 512)) * 0.05).astype(np.float32)
    raw = quantize(w, qtype)
    ref = gguf.quants.dequantize(raw, T[qtype])
    ours = ggml.dequantize(torch.from_numpy(raw), int(T[qtype]), w.shape, torch.float32).numpy()
    assert np.array_equal(ours, ref)
    assert np.abs(ref - w).max() < 0.1 * np.abs(w).max()  # the bytes do encode w


def _diffusers_gguf(path, root, preset, monkeypatch) -> FluxTransformer2DModel:
    """diffusers' GGUF loading (its reader, GGUFParameter, GGUFLinear) of our file. Its FLUX key
    converter hard-codes the published widths (3072), so for this tiny width the BFL -> diffusers
    renaming is done by our tables, which test_parity_diffusers checks against diffusers' models."""
    rules = transformer_rules(preset.transformer)

    def convert(checkpoint, **_):
        # Rows of GGML blocks split and swap like rows of values; rewrap with each source's type.
        quant = {k: v.quant_type for k, v in checkpoint.items() if isinstance(v, GGUFParameter)}
        plain = {k: v.as_tensor() if k in quant else v for k, v in checkpoint.items()}
        out = to_diffusers(plain, rules)
        source = {d: r.native for r in rules for d in r.diffusers}
        return {k: GGUFParameter(v, quant_type=quant[source[k]]) if source[k] in quant else v for k, v in out.items()}

    entry = dict(single_file_model.SINGLE_FILE_LOADABLE_CLASSES["FluxTransformer2DModel"])
    entry["checkpoint_mapping_fn"] = convert
    monkeypatch.setitem(single_file_model.SINGLE_FILE_LOADABLE_CLASSES, "FluxTransformer2DModel", entry)
    config = write_diffusers_config(root / "diffusers-config", preset)
    return FluxTransformer2DModel.from_single_file(
        str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32), config=str(config),
        subfolder="transformer", torch_dtype=torch.float32).eval()


@pytest.mark.parametrize("qtype", REQUIRED)
def test_gguf_transformer_matches_diffusers_gguf_loading(folder, qtype, monkeypatch):
    path = folder / f"kontext-{qtype}.gguf"
    ours = KontextEditor.load(path)
    qkv = ours.transformer.double_blocks[0].img_attn.qkv
    assert isinstance(qkv, GGUFLinear) and qkv.qweight.dtype == torch.uint8
    assert qkv.qweight.numel() == 768 * ggml.row_bytes(int(T[qtype]), 256)  # stored as in the file
    theirs = _diffusers_gguf(path, folder, ours.preset, monkeypatch)
    assert type(theirs.transformer_blocks[0].attn.to_q).__name__ == "GGUFLinear"
    x = kontext_inputs()
    t, g = torch.tensor([0.7, 0.3]), torch.tensor([2.5, 4.0])
    with torch.no_grad():
        out = ours.transformer(img=x["img"], img_ids=x["img_ids"], txt=x["txt"], txt_ids=x["txt_ids"], y=x["y"],
                               timesteps=t, guidance=g)
        ref = theirs(hidden_states=x["img"], encoder_hidden_states=x["txt"], pooled_projections=x["y"], timestep=t,
                     img_ids=x["img_ids"][0], txt_ids=x["txt_ids"][0], guidance=g, return_dict=False)[0]
    assert rel(out, ref) <= 2e-3


@pytest.mark.parametrize("qtype", REQUIRED)
def test_gguf_edit_close_to_the_file_it_was_made_from(folder, reference_image, qtype):
    editor = KontextEditor.load(folder / f"kontext-{qtype}.gguf")
    image = editor.edit([source_image()], [INSTRUCTION], [1]).images[0]
    assert max_level_diff(image, reference_image) <= IMAGE_TOLERANCE[qtype]


def test_gguf_of_an_unsupported_quant_type_is_refused_naming_it(folder):
    state = load_file(str(folder / "flux1-kontext-dev.safetensors"))
    target = folder / "kontext-IQ2.gguf"
    # The model's tensors with one weight declared IQ2_XXS (bytes of the right size, never read).
    writer = gguf.GGUFWriter(str(target), "flux")
    for key, value in state.items():
        if key == "double_blocks.0.img_mlp.0.weight":
            block, size = gguf.GGML_QUANT_SIZES[T.IQ2_XXS]
            raw = np.zeros((value.shape[0], value.shape[1] // block * size), np.uint8)
            writer.add_tensor(key, raw, raw_shape=raw.shape, raw_dtype=T.IQ2_XXS)
        else:
            writer.add_tensor(key, value.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    try:
        with pytest.raises(CheckpointError) as e:
            KontextEditor.load(target)
    finally:
        target.unlink()
    message = str(e.value)
    assert "IQ2_XXS" in message and "double_blocks.0.img_mlp.0.weight" in message
    assert "supported: F32, F16, BF16, Q8_0, Q4_0" in message and "Q6_K" in message


def test_gguf_that_is_not_a_kontext_transformer_is_refused(folder, tmp_path):
    writer = gguf.GGUFWriter(str(tmp_path / "llm.gguf"), "llama")
    writer.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    target = folder / "llm.gguf"
    target.write_bytes((tmp_path / "llm.gguf").read_bytes())
    try:
        with pytest.raises(CheckpointError, match=r"not a FLUX.1 Kontext transformer GGUF \(architecture 'llama'; "
                                                  r"no 'img_in.weight' tensor, found e.g. token_embd.weight\)"):
            KontextEditor.load(target)
    finally:
        target.unlink()
    (tmp_path / "broken.gguf").write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(CheckpointError, match="not a readable GGUF file"):
        KontextEditor.load(tmp_path / "broken.gguf")


@pytest.fixture(scope="module")
def comfy_file(folder):
    _, transformer, _, _ = wide_state()
    path = folder / "flux1-dev-kontext_fp8_scaled.safetensors"
    save_file(comfy_fp8_state(transformer.state_dict(), transformer), str(path))
    yield path
    path.unlink()


def test_comfy_fp8_scaled_file_loads_as_fp8_with_its_scales(comfy_file, folder, reference_image):
    stored = load_file(str(comfy_file))
    editor = KontextEditor.load(comfy_file)
    qkv = editor.transformer.double_blocks[0].img_attn.qkv
    assert isinstance(qkv, CastLinear) and qkv.weight.dtype == torch.float8_e4m3fn
    key = "model.diffusion_model.double_blocks.0.img_attn.qkv"
    assert torch.equal(qkv.weight.view(torch.uint8), stored[f"{key}.weight"].view(torch.uint8))
    assert qkv.scale.item() == stored[f"{key}.scale_weight"].item()
    expected = stored[f"{key}.weight"].float() * stored[f"{key}.scale_weight"]
    assert torch.equal(qkv.upcast_weight(torch.float32), expected)
    # modulation linears stay in the compute dtype (the file holds them in bf16)
    assert editor.transformer.double_blocks[0].img_mod.lin.weight.dtype == torch.float32
    image = editor.edit([source_image()], [INSTRUCTION], [1]).images[0]
    assert max_level_diff(image, reference_image) <= 12  # measured 6 (fp8 e4m3, per-tensor scale; bf16 rest)


def test_fp8_file_with_a_scale_for_a_missing_weight_is_refused(comfy_file):
    stored = load_file(str(comfy_file))
    stored["model.diffusion_model.ghost.scale_weight"] = torch.tensor(1.0)
    target = comfy_file.parent / "bad_fp8_scaled.safetensors"
    save_file(stored, str(target))
    try:
        with pytest.raises(CheckpointError, match="'ghost.scale_weight' scales no ghost.weight"):
            KontextEditor.load(target)
    finally:
        target.unlink()


@pytest.mark.parametrize("name", [*(f"kontext-{q}.gguf" for q in ("Q8_0", "Q4_K")), "fp8"])
def test_plan_estimate_counts_the_files_compact_bytes(folder, comfy_file, name):
    """plan_for predicts the transformer's bytes as loaded (GGUF blocks / fp8 kept as stored),
    not as if the file were float32: what lets a 12 GB card pick a GGUF file's resident plan."""
    from kontext_core.quant.load import plan_for
    from kontext_core.quant.plans import weight_bytes

    path = comfy_file if name == "fp8" else folder / name
    predicted = plan_for(path, plan="resident", text=False).components["transformer"]
    loaded = sum(weight_bytes(KontextEditor.load(path, text=False).transformer).values())
    full = plan_for(folder / "flux1-kontext-dev.safetensors", plan="resident", text=False).components["transformer"]
    assert predicted == loaded
    assert predicted < 0.6 * full
