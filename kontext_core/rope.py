"""Rotary position embedding over FLUX's three position axes (spec §1.9).

Pairs are interleaved over the head dim: dims (2p, 2p+1) form pair p; pairs are laid out axis by
axis in the order 0, 1, 2.
"""

from __future__ import annotations

from typing import NamedTuple

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


class ComplexRope(NamedTuple):
    """The exact tables, plus the same rotation as one complex64 table [.., L, D/2]: cos + i·sin.

    Eager CPU code applies ``table`` (apply_rope_complex); compiled code the plain cos/sin."""

    cos: torch.Tensor
    sin: torch.Tensor
    table: torch.Tensor

    def tokens(self, start: int, stop: int) -> torch.Tensor:
        return self.table[..., start:stop, :]


def complex_table(cos: torch.Tensor, sin: torch.Tensor) -> ComplexRope:
    return ComplexRope(cos, sin, torch.complex(cos.float(), sin.float()))


def _pairs_as_complex(x: torch.Tensor) -> torch.Tensor:
    pairs = x.unflatten(-1, (-1, 2))
    if pairs.storage_offset() % 2 or any(s % 2 for s in pairs.stride()[:-2]) or pairs.stride(-1) != 1:
        pairs = pairs.contiguous()  # view_as_complex needs whole complex numbers in memory
    return torch.view_as_complex(pairs)


def apply_rope_complex(x: torch.Tensor, table: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """apply_rope as one complex multiply: pair (x0, x1) is x0 + i·x1, rotated by cos + i·sin.

    On the CPU this is bit-identical to ``apply_rope`` (the complex product is c·x0 − s·x1,
    s·x0 + c·x1 with the same roundings) in one pass instead of six half passes and a stack.
    ``out``: a float32 [B, H, L, D] (view) to write into, e.g. one stream's slice of the joint q."""
    xc = _pairs_as_complex(x.float())
    if out is None:
        return torch.view_as_real(xc * table).flatten(-2).type_as(x)
    torch.mul(xc, table, out=torch.view_as_complex(out.unflatten(-1, (-1, 2))))
    return out
