"""The autoencoder's per-device memory format: channels_last on the CPU, same values as contiguous.

The contiguous reference is today's layout (the format table emptied), so these pin that the faster
layout changes pixels only by float rounding (≤ 1e-5 relative), and that training (autograd on)
still gets gradients (the in-place SiLU/residual adds are inference-only).
"""

from __future__ import annotations

import pytest
import torch
from kontext_ckpt_helpers import tiny_native

import kontext_core.autoencoder as ae_module
from kontext_core.autoencoder import AutoEncoder, memory_format_for


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def autoencoders() -> list[AutoEncoder]:
    """The shipped kontext-tiny autoencoder (3 levels) and a perturbed random 2-level one."""
    from kontext_core.loading import load_components, resolve_model

    _, shipped, _ = load_components(resolve_model("kontext-tiny"), torch.device("cpu"), torch.float32)
    return [shipped.eval(), tiny_native()[2]]


def contiguous(monkeypatch, fn, *args):
    with monkeypatch.context() as m:
        m.setattr(ae_module, "_MEMORY_FORMATS", {})
        return fn(*args)


def test_cpu_uses_channels_last():
    assert memory_format_for("cpu") == torch.channels_last
    assert memory_format_for(torch.device("cpu")) == torch.channels_last


@pytest.mark.parametrize("batch", [1, 3])
def test_channels_last_decode_equals_contiguous_decode(monkeypatch, autoencoders, batch):
    for ae in autoencoders:
        c = ae.config.z_channels
        z = torch.randn(batch, c, 16, 12, generator=torch.Generator().manual_seed(batch))
        with torch.inference_mode():
            fast = ae.decode(z)
            ref = contiguous(monkeypatch, ae.decode, z)
        assert fast.is_contiguous(memory_format=torch.channels_last) and not fast.is_contiguous()
        assert ref.is_contiguous()
        assert fast.shape == ref.shape
        assert rel(fast, ref) <= 1e-5
        assert ref.std() > 0.01  # a real decode, not a constant


def test_channels_last_encode_equals_contiguous_encode(monkeypatch, autoencoders):
    for ae in autoencoders:
        x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(4)) * 2 - 1
        with torch.inference_mode():
            fast = ae.encode(x)
            ref = contiguous(monkeypatch, ae.encode, x)
        assert fast.is_contiguous()  # packed into tokens next: a plain layout
        assert rel(fast, ref) <= 1e-5


def test_decode_under_autograd_matches_and_backpropagates(autoencoders):
    ae = autoencoders[1]
    z = torch.randn(1, ae.config.z_channels, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref = ae.decode(z)
    out = ae.decoder(z / ae.config.scale_factor + ae.config.shift_factor)  # as training calls it
    out.square().mean().backward()
    assert rel(out.detach(), ref) <= 1e-5
    grads = [p.grad for p in ae.decoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    ae.zero_grad(set_to_none=True)
