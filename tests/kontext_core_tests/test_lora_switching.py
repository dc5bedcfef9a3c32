"""Switching adapter sets on a resident model: A, then B, then none.

After A then B the edit equals a fresh model with only B, and after none the base — bit for bit,
in both modes: unfused never writes the base weights, fused restores the rows it changed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kontext_ckpt_helpers import SIZE, diffusers_pipeline, tiny_editor
from lora_helpers import write_kohya_lora, write_peft_lora, write_xlabs_lora
from PIL import Image

from kontext_core.lora import active_loras, apply_loras, clear_loras, load_lora, lora_key, set_loras
from kontext_core.speed.fp8 import swap_fp8_linears

PROMPTS = ["make the background red", "turn the shoe into a green bag"]
SEEDS = [3, 11]


@pytest.fixture(scope="module")
def image() -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    editor = tiny_editor()
    a = load_lora(write_peft_lora(root / "a", diffusers_pipeline(editor).transformer, seed=1))
    b = load_lora(write_kohya_lora(root / "b.safetensors", seed=2))
    c = load_lora(write_xlabs_lora(root / "c.safetensors", seed=3))
    return a, b, c


def pixels(editor, image) -> np.ndarray:
    out = editor.edit([image] * 2, PROMPTS, SEEDS, steps=4, guidance=2.5)
    return np.stack([np.asarray(im) for im in out.images])


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def assert_same_state(module: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    now = module.state_dict()
    assert set(now) == set(saved)
    assert all(torch.equal(now[k], saved[k]) for k in saved)


@pytest.mark.parametrize("mode", ["unfused", "fused"])
def test_a_then_b_then_none_equal_fresh_b_and_the_base(adapters, image, mode):
    a, b, c = adapters
    editor = tiny_editor()
    base_state = state(editor.transformer)
    base = pixels(editor, image)
    assert set_loras(editor.transformer, [(a, 0.8), (c, 0.5)], mode) is True
    with_a = pixels(editor, image)
    if mode == "unfused":
        assert_same_state(editor.transformer, base_state)  # a separate path: the base is never written
    assert set_loras(editor.transformer, [(b, 1.2)], mode) is True
    with_b = pixels(editor, image)
    assert set_loras(editor.transformer, [], mode) is True
    assert active_loras(editor.transformer) == ()
    assert_same_state(editor.transformer, base_state)
    assert np.array_equal(pixels(editor, image), base)

    fresh = tiny_editor()
    set_loras(fresh.transformer, [(b, 1.2)], mode)
    assert np.array_equal(with_b, pixels(fresh, image))
    assert not np.array_equal(with_a, base) and not np.array_equal(with_b, base)
    assert not np.array_equal(with_a, with_b)


def test_same_set_is_a_no_op_and_order_does_not_matter(adapters, image):
    a, b, _ = adapters
    editor = tiny_editor()
    assert set_loras(editor.transformer, [(a, 0.5), (b, 1.0)]) is True
    first = pixels(editor, image)
    assert set_loras(editor.transformer, [(b, 1.0), (a, 0.5)]) is False  # same set, other order
    assert np.array_equal(pixels(editor, image), first)
    hooks = sum(len(m._forward_hooks) for m in editor.transformer.modules())
    assert hooks == len(set(a.modules) | set(b.modules))  # one hook per adapted layer, not per set applied
    assert set_loras(editor.transformer, [(a, 0.5), (b, 1.0)], "fused") is True  # a mode change re-applies
    assert sum(len(m._forward_hooks) for m in editor.transformer.modules()) == 0
    clear_loras(editor.transformer)


def test_apply_loras_context_restores_the_base(adapters, image):
    a, _, _ = adapters
    editor = tiny_editor()
    base_state, base = state(editor.transformer), pixels(editor, image)
    with apply_loras(editor.transformer, [(a, 1.0)], "fused"):
        assert not np.array_equal(pixels(editor, image), base)
    assert_same_state(editor.transformer, base_state)
    assert np.array_equal(pixels(editor, image), base)


def test_cache_key_entry_names_hashes_scales_and_mode(adapters):
    a, b, _ = adapters
    assert lora_key([]) is None  # runs without LoRA keep their keys
    key = lora_key([(a, 0.5), (b, 1.0)])
    assert key == lora_key([(b, 1.0), (a, 0.5)])
    assert {e["sha256"] for e in key["adapters"]} == {a.fingerprint, b.fingerprint}
    assert key != lora_key([(a, 0.6), (b, 1.0)])
    assert key != lora_key([(a, 0.5), (b, 1.0)], "fused")
    assert len(a.fingerprint) == 64 and a.fingerprint != b.fingerprint


def test_unfused_lora_on_fp8_layers_and_back(adapters, image):
    """fp8 (emulated on the CPU) layers take the unfused path; fused is refused with the fix."""
    a, _, _ = adapters
    editor = tiny_editor()
    float_lora = tiny_editor()
    set_loras(float_lora.transformer, [(a, 1.0)])
    swap_fp8_linears(editor.transformer, backend="emulate", quiet=True)
    fp8_base = pixels(editor, image)
    with pytest.raises(Exception) as info:
        set_loras(editor.transformer, [(a, 1.0)], "fused")
    assert "use the unfused LoRA mode" in str(info.value) and "Fp8Linear" in str(info.value)
    assert active_loras(editor.transformer) == ()  # nothing half-applied
    set_loras(editor.transformer, [(a, 1.0)])
    fp8_lora = pixels(editor, image).astype(int)
    exact_lora = pixels(float_lora, image).astype(int)
    assert np.abs(fp8_lora - exact_lora).mean() < np.abs(fp8_base.astype(int) - exact_lora).mean() / 2
    set_loras(editor.transformer, [])
    assert np.array_equal(pixels(editor, image), fp8_base)
