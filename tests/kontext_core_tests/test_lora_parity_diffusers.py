"""LoRA parity with diffusers 0.42 + peft (the reference), tiny random Kontext, CPU, fp32.

Each format's file, applied by kontext_core.lora, gives the same edit as diffusers'
``FluxKontextPipeline.load_lora_weights`` on the same file and inputs: final latents ≤ 1e-4
relative, uint8 pixels equal in ≥ 99.9 % of values (the bounds of test_parity_diffusers).
Where diffusers' converter only knows the full-size FLUX.1 (kohya's single-block linear1, fal's
Kontext layout: 19/38 blocks of width 3072 are written into them), the tiny edit is compared
against the same adapter in diffusers' own format, and the converter itself is compared with
ours on a full-size rank-1 file (every layer's update applied to the same probe vectors).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.loaders.lora_conversion_utils import (
    _convert_fal_kontext_lora_to_diffusers,
    _convert_kohya_flux_lora_to_diffusers,
)
from kontext_ckpt_helpers import SIZE, diffusers_pipeline, tiny_editor
from lora_helpers import (
    fal_layers,
    fal_state,
    write_kohya_lora,
    write_peft_lora,
    write_xlabs_lora,
)
from PIL import Image
from safetensors.torch import save_file
from test_parity_diffusers import capture_latents, rel

from kontext_core.checkpoint import transformer_rules
from kontext_core.config import TransformerConfig
from kontext_core.lora import load_lora, set_loras
from kontext_core.lora.apply import _placements
from kontext_core.transformer import KontextTransformer

PROMPTS = ["make the background red", "turn the shoe into a green bag"]
SEEDS = [3, 11]


@pytest.fixture(scope="module")
def context_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))


def reference_edit(pipe, image: Image.Image, files_and_scales: list[tuple[str, float]]):
    """diffusers: load_lora_weights per file, set_adapters with the scales; latents and uint8 pixels."""
    names = []
    for n, (file, _) in enumerate(files_and_scales):
        pipe.load_lora_weights(str(file), adapter_name=f"a{n}")
        names.append(f"a{n}")
    pipe.set_adapters(names, [s for _, s in files_and_scales])
    w, h = SIZE
    common = dict(image=image, prompt=PROMPTS, height=h, width=w, max_area=h * w, _auto_resize=False,
                  guidance_scale=2.5, num_inference_steps=4, max_sequence_length=16)

    def generators():
        return [torch.Generator("cpu").manual_seed(s) for s in SEEDS]

    latents = pipe(**common, generator=generators(), output_type="latent").images
    pixels = pipe(**common, generator=generators(), output_type="np").images
    return latents, (pixels * 255).round().astype(np.uint8)


def assert_same_edit(monkeypatch, editor, image, loras, reference, mode: str = "unfused") -> None:
    ref_latents, ref_u8 = reference
    captured = capture_latents(monkeypatch)
    base = editor.edit([image] * 2, PROMPTS, SEEDS, steps=4, guidance=2.5)
    set_loras(editor.transformer, loras, mode)
    ours = editor.edit([image] * 2, PROMPTS, SEEDS, steps=4, guidance=2.5)
    set_loras(editor.transformer, [])
    assert rel(captured[1], ref_latents) <= 1e-4
    ours_u8 = np.stack([np.asarray(im) for im in ours.images])
    base_u8 = np.stack([np.asarray(im) for im in base.images])
    assert ours_u8.shape == ref_u8.shape
    assert (ours_u8 == ref_u8).mean() >= 0.999
    assert rel(captured[1], captured[0]) > 0.02  # the LoRA really changes the edit
    assert np.abs(ours_u8.astype(int) - base_u8).mean() > 2


@pytest.mark.parametrize("mode", ["unfused", "fused"])
def test_diffusers_peft_format_two_adapters_match_load_lora_weights(tmp_path, monkeypatch, context_image, mode):
    editor = tiny_editor()
    pipe = diffusers_pipeline(editor)
    # rank_pattern/alpha_pattern/rslora: the per-layer scale is read from the file's metadata
    a = write_peft_lora(tmp_path / "a", pipe.transformer, seed=1, rank_pattern={"^single_transformer_blocks.1.proj_mlp": 2},
                        alpha_pattern={"^transformer_blocks.0.attn.to_q": 3})
    b = write_peft_lora(tmp_path / "b", pipe.transformer, seed=2, rank=3, alpha=5, use_rslora=True)
    adapters = [load_lora(a), load_lora(tmp_path / "b")]  # a file or diffusers' folder
    assert [x.format for x in adapters] == ["diffusers", "diffusers"]
    reference = reference_edit(pipe, context_image, [(a, 0.7), (b, 1.3)])
    assert_same_edit(monkeypatch, editor, context_image, [(adapters[0], 0.7), (adapters[1], 1.3)], reference, mode)


def test_kohya_format_matches_load_lora_weights(tmp_path, monkeypatch, context_image):
    editor = tiny_editor()
    pipe = diffusers_pipeline(editor)
    file = write_kohya_lora(tmp_path / "kohya.safetensors", seed=3)
    adapter = load_lora(file)
    assert adapter.format == "kohya"
    assert len(adapter.modules) == 24
    reference = reference_edit(pipe, context_image, [(file, 0.8)])
    assert_same_edit(monkeypatch, editor, context_image, [(adapter, 0.8)], reference)


def test_xlabs_format_matches_load_lora_weights(tmp_path, monkeypatch, context_image):
    editor = tiny_editor()
    pipe = diffusers_pipeline(editor)
    file = write_xlabs_lora(tmp_path / "xlabs.safetensors", seed=4)
    adapter = load_lora(file)
    assert adapter.format == "xlabs"
    reference = reference_edit(pipe, context_image, [(file, 1.0)])
    assert_same_edit(monkeypatch, editor, context_image, [(adapter, 1.0)], reference)


def diffusers_twin_of_native(state: dict[str, torch.Tensor], cfg: TransformerConfig) -> dict[str, torch.Tensor]:
    """A native-named (fal) PEFT LoRA as diffusers' own format: fused layers' lora_B split by rows
    into the diffusers pieces (our conversion tables), lora_A shared — as diffusers' converter does."""
    rules = {r.native: r for r in transformer_rules(cfg)}
    out = {}
    for key, value in state.items():
        if not key.endswith("lora_A.weight"):
            continue
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        rule = rules[module + ".weight"]
        up = state[key.replace("lora_A", "lora_B")]
        ups = torch.split(up, list(rule.sizes)) if rule.sizes else (up,)
        for target, piece in zip(rule.diffusers, ups, strict=True):
            name = "transformer." + target.removesuffix(".weight")
            out[f"{name}.lora_A.weight"], out[f"{name}.lora_B.weight"] = value.clone(), piece.clone()
    return out


def test_fal_kontext_format_matches_diffusers_twin(tmp_path, monkeypatch, context_image):
    editor = tiny_editor()
    pipe = diffusers_pipeline(editor)
    state = fal_state(seed=5, layers=fal_layers())
    save_file(state, str(tmp_path / "fal.safetensors"))
    save_file(diffusers_twin_of_native(state, editor.preset.transformer), str(tmp_path / "twin.safetensors"))
    adapter = load_lora(tmp_path / "fal.safetensors")
    assert adapter.format == "native"
    reference = reference_edit(pipe, context_image, [(tmp_path / "twin.safetensors", 0.9)])
    assert_same_edit(monkeypatch, editor, context_image, [(adapter, 0.9)], reference)


# --- diffusers' converters vs ours on full-size (FLUX.1 [dev] shaped) rank-1 files ---------------

FULL = TransformerConfig()  # 19 double + 38 single blocks of width 3072


def full_size_layers() -> dict[str, tuple[int, int]]:
    h, mlp = FULL.hidden_size, FULL.mlp_hidden
    layers = {}
    for i in range(FULL.depth):
        for s in ("img", "txt"):
            layers |= {f"double_blocks.{i}.{s}_attn.qkv": (h, 3 * h), f"double_blocks.{i}.{s}_attn.proj": (h, h),
                       f"double_blocks.{i}.{s}_mlp.0": (h, mlp), f"double_blocks.{i}.{s}_mlp.2": (mlp, h),
                       f"double_blocks.{i}.{s}_mod.lin": (h, 6 * h)}
    for i in range(FULL.depth_single_blocks):
        layers |= {f"single_blocks.{i}.linear1": (h, 3 * h + mlp), f"single_blocks.{i}.linear2": (h + mlp, h),
                   f"single_blocks.{i}.modulation.lin": (h, 3 * h)}
    return layers | {"final_layer.linear": (h, FULL.out_channels)}


def probe_updates(adapter, model: KontextTransformer) -> dict[str, torch.Tensor]:
    """Each adapted layer's ΔW @ P for fixed probes P (full-size ΔW would be gigabytes)."""
    out: dict[str, torch.Tensor] = {}
    for p in _placements(model, [(adapter, 1.0)]):
        in_features = p.piece.down.shape[1]
        probe = torch.randn(in_features, 2, generator=torch.Generator().manual_seed(in_features), dtype=torch.float64)
        module = model.get_submodule(p.piece.module)
        acc = out.setdefault(p.piece.module, torch.zeros(module.out_features, 2, dtype=torch.float64))
        rows = p.piece.up.shape[0]
        acc[p.start : p.start + rows] += p.scale * (p.piece.up.double() @ (p.piece.down.double() @ probe))
    return out


@pytest.fixture(scope="module")
def full_size_model() -> KontextTransformer:
    with torch.device("meta"):
        return KontextTransformer(FULL)


def assert_same_updates(ours, reference) -> None:
    assert set(ours) == set(reference)
    for name in ours:
        assert torch.allclose(ours[name], reference[name], rtol=1e-5, atol=1e-6), name


def test_fal_kontext_converter_agrees_on_full_size(tmp_path, full_size_model):
    state = fal_state(seed=6, layers=full_size_layers(), rank=1)
    save_file(state, str(tmp_path / "fal.safetensors"))
    converted = _convert_fal_kontext_lora_to_diffusers(dict(state))
    save_file({k: v.clone() for k, v in converted.items()}, str(tmp_path / "converted.safetensors"))
    ours = probe_updates(load_lora(tmp_path / "fal.safetensors"), full_size_model)
    assert len(ours) == 19 * 10 + 38 * 3 + 1
    assert_same_updates(ours, probe_updates(load_lora(tmp_path / "converted.safetensors"), full_size_model))


def test_kohya_converter_agrees_on_full_size_with_linear1_and_embedders(tmp_path, full_size_model):
    h = FULL.hidden_size
    layers = full_size_layers() | {"img_in": (FULL.in_channels, h), "txt_in": (FULL.context_in_dim, h),
                                   "time_in.in_layer": (256, h), "vector_in.out_layer": (h, h),
                                   "guidance_in.in_layer": (256, h), "final_layer.adaLN_modulation.1": (h, 2 * h)}
    # diffusers drops the final layer's alphas (its converter: "TODO: alphas"); sd-scripts scales
    # every layer by alpha / rank, as we do. Without alphas there both agree.
    file = write_kohya_lora(tmp_path / "kohya.safetensors", seed=7, layers=layers, no_alpha=("final_layer",))
    from safetensors.torch import load_file

    converted = _convert_kohya_flux_lora_to_diffusers(load_file(str(file)))
    # diffusers leaves the embedders' and final layer's keys without the "transformer." prefix
    # (load_lora_weights then skips them); put it on so both sides hold every layer.
    converted = {k if k.startswith("transformer.") else "transformer." + k: v for k, v in converted.items()}
    save_file({k: v.contiguous().clone() for k, v in converted.items()}, str(tmp_path / "converted.safetensors"))
    ours = probe_updates(load_lora(file), full_size_model)
    assert len(ours) == len(layers)
    assert_same_updates(ours, probe_updates(load_lora(tmp_path / "converted.safetensors"), full_size_model))
