"""Rotary position embedding over FLUX's three position axes (spec §1.9).

Pairs are interleaved over the head dim: dims (2p, 2p+1) form pair p; pairs are laid out axis by
axis in the order 0, 1, 2.
"""

from __future__ import annotations

import torch


def _freq_dtype(device: torch.device) -> torch.dtype:
    # Frequencies in float64 like diffusers, except on devices without float64 support.
    return torch.float32 if device.type in ("mps", "npu") else torch.float64


def rope_table(ids: torch.Tensor, axes_dim: tuple[int, ...], theta: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each [..., L, head_dim/2] float32, for position ids [..., L, n_axes]."""
    dtype = _freq_dtype(ids.device)
    angles = []
    for axis, dim in enumerate(axes_dim):
        omega = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=dtype, device=ids.device) / dim))
        angles.append(ids[..., axis].to(dtype)[..., None] * omega)
    theta_all = torch.cat(angles, dim=-1)
    return theta_all.cos().float(), theta_all.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x [B, H, L, D] by tables [.., L, D/2]; computed in float32."""
    xf = x.float().unflatten(-1, (-1, 2))
    x0, x1 = xf[..., 0], xf[..., 1]
    out = torch.stack((cos * x0 - sin * x1, sin * x0 + cos * x1), dim=-1)
    return out.flatten(-2).type_as(x)
