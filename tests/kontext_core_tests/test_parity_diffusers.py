"""Numerical parity of kontext_core with diffusers 0.42 (the reference), tiny random models, CPU.

fp32: transformer and autoencoder ≤ 1e-5 relative; a whole 4-step edit against FluxKontextPipeline
built from the same modules: final latents ≤ 1e-4 relative, uint8 pixels equal in ≥ 99.9 % of values.
bf16: within bf16 tolerance of fp32.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from kontext_ckpt_helpers import SIZE, diffusers_pipeline, perturb_, tiny_editor
from PIL import Image

import kontext_core.editor as editor_module
from kontext_core.autoencoder import AutoEncoder
from kontext_core.checkpoint import autoencoder_rules, to_diffusers, to_native, transformer_rules
from kontext_core.checkpoint.infer import diffusers_autoencoder_fields, diffusers_transformer_fields
from kontext_core.config import AutoencoderConfig, TransformerConfig
from kontext_core.editor import KontextEditor
from kontext_core.sampling import image_ids
from kontext_core.transformer import KontextTransformer

PROMPTS = ["make the background red", "turn the shoe into a green bag"]
SEEDS = [3, 11]


def rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours.float() - ref.float()).norm() / ref.float().norm()).item()


def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def diffusers_transformer() -> FluxTransformer2DModel:
    torch.manual_seed(0)
    model = FluxTransformer2DModel(num_layers=2, num_single_layers=2, attention_head_dim=16, num_attention_heads=2,
                                   joint_attention_dim=32, pooled_projection_dim=32, in_channels=16,
                                   axes_dims_rope=(4, 6, 6), guidance_embeds=True)
    perturb_(model, 1)  # norm scales ≠ 1 and distinct: a swapped q/k norm would show
    return model.eval()


@pytest.fixture(scope="module")
def diffusers_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    model = AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                          up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, latent_channels=4,
                          norm_num_groups=8, use_quant_conv=False, use_post_quant_conv=False,
                          scaling_factor=0.7, shift_factor=0.2)
    perturb_(model, 2)
    return model.eval()


def native_transformer(reference: FluxTransformer2DModel) -> KontextTransformer:
    cfg = TransformerConfig(**diffusers_transformer_fields(reference.config, "test"))
    model = KontextTransformer(cfg).eval()
    model.load_state_dict(to_native(reference.state_dict(), transformer_rules(cfg), shapes(model)), strict=True)
    return model


def native_autoencoder(reference: AutoencoderKL) -> AutoEncoder:
    cfg = AutoencoderConfig(**diffusers_autoencoder_fields(reference.config, "test"))
    model = AutoEncoder(cfg).eval()
    model.load_state_dict(to_native(reference.state_dict(), autoencoder_rules(cfg), shapes(model)), strict=True)
    return model


def test_conversion_tables_cover_both_key_sets_and_round_trip(diffusers_transformer, diffusers_vae):
    for reference, native in ((diffusers_transformer, native_transformer(diffusers_transformer)),
                              (diffusers_vae, native_autoencoder(diffusers_vae))):
        rules = (transformer_rules if isinstance(native, KontextTransformer) else autoencoder_rules)(native.config)
        assert {r.native for r in rules} == set(native.state_dict())
        assert {k for r in rules for k in r.diffusers} == set(reference.state_dict())
        back = to_diffusers(native.state_dict(), rules)
        for key, value in reference.state_dict().items():
            assert torch.equal(back[key], value), key


def kontext_inputs(batch: int = 2, generator_seed: int = 0):
    """Target 3×5 tokens (axis0 0) + context 4×2 tokens (axis0 1), 7 text tokens."""
    gen = torch.Generator().manual_seed(generator_seed)
    ids = torch.cat((image_ids(3, 5, 0.0), image_ids(4, 2, 1.0)), dim=1)
    return {
        "img": torch.randn(batch, ids.shape[1], 16, generator=gen),
        "img_ids": ids,
        "txt": torch.randn(batch, 7, 32, generator=gen),
        "txt_ids": torch.zeros(1, 7, 3),
        "y": torch.randn(batch, 32, generator=gen),
    }


def test_transformer_matches_diffusers(diffusers_transformer):
    ours = native_transformer(diffusers_transformer)
    x = kontext_inputs()
    t, g = torch.tensor([0.7, 0.3]), torch.tensor([2.5, 4.0])
    with torch.no_grad():
        out = ours(img=x["img"], img_ids=x["img_ids"], txt=x["txt"], txt_ids=x["txt_ids"], y=x["y"],
                   timesteps=t, guidance=g)
        # diffusers: ids 2-D [L, 3]; timestep and guidance in the same units (it multiplies by 1000).
        ref = diffusers_transformer(hidden_states=x["img"], encoder_hidden_states=x["txt"], pooled_projections=x["y"],
                                    timestep=t, img_ids=x["img_ids"][0], txt_ids=x["txt_ids"][0], guidance=g,
                                    return_dict=False)[0]
    assert out.shape == ref.shape == (2, 23, 16)
    assert rel(out, ref) <= 1e-5


def test_autoencoder_matches_diffusers(diffusers_vae):
    ours = native_autoencoder(diffusers_vae)
    cfg = diffusers_vae.config
    pixels = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        z = ours.encode(pixels)
        z_ref = (diffusers_vae.encode(pixels).latent_dist.mode() - cfg.shift_factor) * cfg.scaling_factor
        assert z.shape == (2, 4, 16, 24)
        assert rel(z, z_ref) <= 1e-5
        decoded = ours.decode(z_ref)
        decoded_ref = diffusers_vae.decode(z_ref / cfg.scaling_factor + cfg.shift_factor).sample
    assert decoded.shape == pixels.shape
    assert rel(decoded, decoded_ref) <= 1e-5


@pytest.fixture(scope="module")
def context_image() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))


def capture_latents(monkeypatch) -> list[torch.Tensor]:
    """Hook the editor's denoise call to keep its final (packed) latents."""
    captured: list[torch.Tensor] = []
    real = editor_module.denoise

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        captured.append(out)
        return out

    monkeypatch.setattr(editor_module, "denoise", spy)
    return captured


def test_whole_edit_matches_flux_kontext_pipeline(monkeypatch, context_image):
    editor = tiny_editor()
    pipe = diffusers_pipeline(editor)
    w, h = SIZE
    assert editor.context_size_for(context_image.size) == (w, h)  # no resize on either side
    captured = capture_latents(monkeypatch)
    ours = editor.edit([context_image] * 2, PROMPTS, SEEDS, steps=4, guidance=2.5)
    common = dict(image=context_image, prompt=PROMPTS, height=h, width=w, max_area=h * w, _auto_resize=False,
                  guidance_scale=2.5, num_inference_steps=4, max_sequence_length=editor.preset.text.t5_max_length)

    def generators():  # one per row, like our per-row seeds
        return [torch.Generator("cpu").manual_seed(s) for s in SEEDS]

    ref_latents = pipe(**common, generator=generators(), output_type="latent").images
    assert captured[0].shape == ref_latents.shape == (2, (h // 4) * (w // 4), 16)
    assert rel(captured[0], ref_latents) <= 1e-4
    ref_pixels = pipe(**common, generator=generators(), output_type="np").images
    ref_u8 = (ref_pixels * 255).round().astype(np.uint8)
    ours_u8 = np.stack([np.asarray(im) for im in ours.images])
    assert ours_u8.shape == ref_u8.shape == (2, h, w, 3)
    assert (ours_u8 == ref_u8).mean() >= 0.999
    assert ours_u8.std() > 10  # a real image, not a constant


def bf16_copy(editor: KontextEditor) -> KontextEditor:
    return KontextEditor(editor.preset, copy.deepcopy(editor.transformer).to(torch.bfloat16),
                         copy.deepcopy(editor.autoencoder).to(torch.bfloat16),
                         copy.deepcopy(editor.text).to(torch.bfloat16), editor.device, torch.bfloat16, "bf16")


def test_bf16_transformer_within_bf16_tolerance():
    editor = tiny_editor(perturbation=0.02)
    fp32, bf16 = editor.transformer, copy.deepcopy(editor.transformer).to(torch.bfloat16)
    x = kontext_inputs()
    # 1000·t and 1000·g exact in bf16: like BFL and diffusers, the ×1000 happens in the model dtype,
    # and a rounded timestep shifts the sinusoid phases far more than bf16 arithmetic does.
    t, g = torch.tensor([0.5, 0.25]), torch.tensor([2.0, 2.0])
    with torch.no_grad():
        ref = fp32(img=x["img"], img_ids=x["img_ids"], txt=x["txt"], txt_ids=x["txt_ids"], y=x["y"], timesteps=t,
                   guidance=g)
        out = bf16(img=x["img"].bfloat16(), img_ids=x["img_ids"], txt=x["txt"].bfloat16(), txt_ids=x["txt_ids"],
                   y=x["y"].bfloat16(), timesteps=t.bfloat16(), guidance=g.bfloat16())
    assert out.dtype == torch.bfloat16
    assert rel(out, ref) < 2e-2


def test_bf16_edit_close_to_fp32(monkeypatch, context_image):
    editor = tiny_editor(perturbation=0.02)
    captured = capture_latents(monkeypatch)
    args = ([context_image], PROMPTS[:1], SEEDS[:1])
    fp32 = np.asarray(editor.edit(*args).images[0]).astype(np.float64)
    bf16 = np.asarray(bf16_copy(editor).edit(*args).images[0]).astype(np.float64)
    assert captured[1].dtype == torch.bfloat16
    assert rel(captured[1], captured[0]) < 5e-2
    assert np.abs(fp32 - bf16).mean() < 4.0  # of 255; the images themselves have std ≈ 75
