"""Unit tests of kontext_core's sampling pieces (schedule, resolutions, packing, position ids),
batch independence, and the full-size shapes (built on the meta device only)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxTransformer2DModel,
)
from kontext_ckpt_helpers import SIZE, tiny_editor
from PIL import Image

import kontext_core.editor as editor_module
from kontext_core.autoencoder import AutoEncoder
from kontext_core.checkpoint import (
    autoencoder_rules,
    diffusers_transformer_config,
    diffusers_vae_config,
    transformer_rules,
)
from kontext_core.checkpoint.infer import diffusers_transformer_fields
from kontext_core.config import SamplerDefaults, TransformerConfig, load_preset
from kontext_core.resolution import PREFERRED_KONTEXT_RESOLUTIONS, nearest_preferred
from kontext_core.sampling import image_ids, pack, schedule, unpack
from kontext_core.transformer import KontextTransformer

# Spec §2.7, L = 4096 target tokens.
SCHEDULE_28_HEAD = [1.0, 0.988409, 0.976222, 0.963394, 0.949873]
SCHEDULE_28_TAIL = [0.274828, 0.195455, 0.104721, 0.0]
SCHEDULE_30_HEAD = [1.0, 0.989199, 0.977883, 0.966014, 0.953549]
SCHEDULE_30_TAIL = [0.259758, 0.184063, 0.098208, 0.0]


def test_schedule_matches_spec_reference_values():
    for steps, head, tail in ((28, SCHEDULE_28_HEAD, SCHEDULE_28_TAIL), (30, SCHEDULE_30_HEAD, SCHEDULE_30_TAIL)):
        times = schedule(steps, 4096)
        assert len(times) == steps + 1
        assert times[: len(head)] == pytest.approx(head, abs=1e-5)
        assert times[-len(tail):] == pytest.approx(tail, abs=1e-5)
        assert all(a > b for a, b in zip(times, times[1:], strict=False))


@pytest.mark.parametrize("tokens,steps", [(4096, 28), (96, 4), (1024, 12)])
def test_schedule_matches_diffusers_scheduler(tokens, steps):
    s = SamplerDefaults()
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=s.base_shift,
                                                max_shift=s.max_shift, base_image_seq_len=s.base_seq_len,
                                                max_image_seq_len=s.max_seq_len)
    slope = (s.max_shift - s.base_shift) / (s.max_seq_len - s.base_seq_len)
    mu = tokens * slope + s.base_shift - slope * s.base_seq_len
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    assert schedule(steps, tokens) == pytest.approx(scheduler.sigmas.tolist(), abs=1e-6)


def test_nearest_preferred_resolution():
    for w, h in PREFERRED_KONTEXT_RESOLUTIONS:
        assert nearest_preferred(w, h) == (w, h)
        assert nearest_preferred(w * 3, h * 3) == (w, h)
    assert nearest_preferred(1000, 1000) == (1024, 1024)
    assert nearest_preferred(3000, 2000) == (1248, 832)  # 1.5 exactly
    assert nearest_preferred(100, 1000) == (672, 1568)  # beyond the list: the extreme entry
    assert nearest_preferred(5000, 100) == (1568, 672)
    assert nearest_preferred(1080, 1000) == (1024, 1024)  # 1.08: below the midpoint 1.0847 of 1.0 and 1.1695
    assert nearest_preferred(1090, 1000) == (1104, 944)


@pytest.mark.parametrize("smaller,larger", [((1024, 1024), (1104, 944)), ((1392, 752), (1456, 720)),
                                            ((880, 1184), (944, 1104))])
def test_nearest_preferred_ties_go_to_the_smaller_width(smaller, larger):
    a, b = smaller[0] / smaller[1], larger[0] / larger[1]
    middle = (a + b) / 2
    assert abs(middle - a) == abs(b - middle)  # an exact tie in floating point
    assert nearest_preferred(middle, 1.0) == smaller


def test_pack_layout_and_round_trip():
    x = torch.randn(2, 4, 6, 10)
    tokens = pack(x)
    assert tokens.shape == (2, 15, 16)
    b, ch, r, c, ph, pw = 1, 3, 2, 4, 1, 0
    assert tokens[b, r * 5 + c, ch * 4 + ph * 2 + pw] == x[b, ch, 2 * r + ph, 2 * c + pw]
    assert torch.equal(unpack(tokens, 6, 10), x)
    assert torch.equal(tokens, FluxKontextPipeline._pack_latents(x, 2, 4, 6, 10))
    assert torch.equal(unpack(tokens, 6, 10), FluxKontextPipeline._unpack_latents(tokens, 12, 20, 2))


def test_image_ids_match_diffusers_and_context_axis0_is_one():
    target = image_ids(3, 5, 0.0)
    context = image_ids(4, 2, 1.0)
    assert target.shape == (1, 15, 3) and context.shape == (1, 8, 3)
    assert torch.equal(target[0], FluxKontextPipeline._prepare_latent_image_ids(1, 3, 5, "cpu", torch.float32))
    ref_context = FluxKontextPipeline._prepare_latent_image_ids(1, 4, 2, "cpu", torch.float32)
    ref_context[..., 0] = 1
    assert torch.equal(context[0], ref_context)
    assert (context[0, :, 0] == 1).all() and (target[0, :, 0] == 0).all()
    assert context[0, 5].tolist() == [1.0, 2.0, 1.0]  # row-major: token 5 is row 2, column 1


def spy_on_denoise(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = editor_module.denoise

    def spy(model, img, img_ids, context, context_ids, txt, txt_ids, y, times, guidance, progress=None, **kw):
        calls.append({"img": img, "img_ids": img_ids, "context": context, "context_ids": context_ids, "times": times,
                      "txt_ids": txt_ids})
        return real(model, img, img_ids, context, context_ids, txt, txt_ids, y, times, guidance, progress, **kw)

    monkeypatch.setattr(editor_module, "denoise", spy)
    return calls


def random_image(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def test_editor_position_ids_and_schedule_with_different_target_and_context_grids(monkeypatch):
    editor = tiny_editor()
    calls = spy_on_denoise(monkeypatch)
    out = editor.edit([random_image(0)], ["make the background red"], [1], size=(32, 40))
    call = calls[0]
    # context 48×32 px -> 12×8 tokens with axis0 = 1; target 32×40 px -> 8 wide × 10 high, axis0 = 0
    assert torch.equal(call["context_ids"], image_ids(8, 12, 1.0))
    assert torch.equal(call["img_ids"], image_ids(10, 8, 0.0))
    assert call["img"].shape[1] == 80 and call["context"].shape[1] == 96
    assert (call["txt_ids"] == 0).all()
    assert call["times"] == schedule(4, 80, editor.preset.sampler)  # target tokens only
    assert out.images[0].size == (32, 40)


def test_row_output_does_not_depend_on_its_batch():
    editor = tiny_editor()
    images = [random_image(i) for i in range(3)]
    alone = editor.edit([images[0]], ["make the background red"], [5]).images[0]
    batch = editor.edit([images[1], images[0], images[2], images[0]],
                        ["turn the shoe blue", "make the background red", "a green bag", "make the background red"],
                        [1, 5, 9, 6]).images
    assert batch[1].tobytes() == alone.tobytes()
    assert batch[3].tobytes() != alone.tobytes()  # same image and text, other seed
    assert batch[0].tobytes() != alone.tobytes()


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_size_shapes_on_meta_device():
    preset = load_preset("flux.1-kontext-dev")
    with torch.device("meta"):
        transformer = KontextTransformer(preset.transformer)
        autoencoder = AutoEncoder(preset.autoencoder)
        reference_tf = FluxTransformer2DModel(**diffusers_transformer_config(preset.transformer))
        reference_vae = AutoencoderKL(**diffusers_vae_config(preset.autoencoder))
    assert count(transformer) == 11_901_408_320 == count(reference_tf)
    assert count(autoencoder) == 83_819_683 == count(reference_vae)
    # The conversion tables cover both full-size key sets exactly, with consistent shapes.
    for native, reference, rules in ((transformer, reference_tf, transformer_rules(preset.transformer)),
                                     (autoencoder, reference_vae, autoencoder_rules(preset.autoencoder))):
        native_shapes = {k: tuple(v.shape) for k, v in native.state_dict().items()}
        reference_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        assert {r.native for r in rules} == set(native_shapes)
        assert {k for r in rules for k in r.diffusers} == set(reference_shapes)
        for rule in rules:
            want = rule.diffusers_shapes(native_shapes[rule.native])
            assert [reference_shapes[k] for k in rule.diffusers] == want, rule.native
    # diffusers' config.json for Kontext maps back to our preset.
    fields = diffusers_transformer_fields(reference_tf.config, "meta")
    assert TransformerConfig(**fields) == preset.transformer


def test_reduced_context_has_fewer_tokens_on_full_size_positions_and_keeps_the_output_size(monkeypatch):
    editor = tiny_editor()
    calls = spy_on_denoise(monkeypatch)
    image = random_image(3)
    exact = editor.edit([image], ["make the background red"], [1])
    reduced = editor.edit([image], ["make the background red"], [1], context_scale=0.5)
    full, half = calls
    # context 48×32 px -> 12×8 tokens exact; at 0.5 -> 24×16 px -> 6×4 tokens, laid on every other position
    assert full["context"].shape[1] == 96 and half["context"].shape[1] == 24
    assert half["context_ids"][0, :, 1].unique().tolist() == [0.0, 2.0, 4.0, 6.0]
    assert half["context_ids"][0, :, 2].unique().tolist() == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert torch.equal(half["img_ids"], full["img_ids"])  # the output grid is the full-size one
    assert reduced.images[0].size == exact.images[0].size == SIZE
    assert not np.array_equal(np.asarray(reduced.images[0]), np.asarray(exact.images[0]))


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5])
def test_context_scale_outside_zero_to_one_is_refused_with_the_reason(scale):
    with pytest.raises(ValueError, match=r"context scale must be in \(0, 1\]"):
        tiny_editor().edit([random_image(0)], ["make it red"], [1], context_scale=scale)
