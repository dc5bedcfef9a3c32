"""Fused RoPE: one elementwise expression on tables prepared once per edit (exact-path speed-up).

``rope.apply_rope`` upcasts q and k to float32, splits the interleaved pairs and ``stack``s them
back: several full-size copies per block. Here the tables are expanded once (per edit, they only
depend on the position ids) to the full head dim and cast to the compute dtype:

    cos_full = [c0, c0, c1, c1, ...]        sin_signed = [-s0, +s0, -s1, +s1, ...]
    out = x * cos_full + swap_pairs(x) * sin_signed     where swap_pairs(x) = [x1, x0, x3, x2, ...]

which is the same rotation (out0 = c·x0 − s·x1, out1 = s·x0 + c·x1). In float32 it matches
``apply_rope`` to rounding (~1e-7); in bfloat16 the products are rounded in bfloat16 instead of
float32, a difference within bfloat16 tolerance. Under ``torch.compile`` the expression is one
fused kernel; eagerly it is a few elementwise ops without the float32 round trip.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class FusedRope(NamedTuple):
    """RoPE tables in the fused layout, each [.., L, head_dim] in the compute dtype.

    A distinct type so the transformer's attention knows which apply function to use."""

    cos: torch.Tensor
    sin: torch.Tensor


def fused_tables(cos: torch.Tensor, sin: torch.Tensor, dtype: torch.dtype) -> FusedRope:
    """Half-dim tables [.., L, D/2] (as ``rope.rope_table`` returns) -> fused tables [.., L, D]."""
    cos_full = torch.stack((cos, cos), dim=-1).flatten(-2)
    sin_signed = torch.stack((-sin, sin), dim=-1).flatten(-2)
    return FusedRope(cos_full.to(dtype), sin_signed.to(dtype))


def swap_pairs(x: torch.Tensor) -> torch.Tensor:
    """[..., D] -> the interleaved pairs swapped: (x1, x0, x3, x2, ...)."""
    return x.unflatten(-1, (-1, 2)).flip(-1).flatten(-2)


def apply_rope_fused(x: torch.Tensor, tables: FusedRope) -> torch.Tensor:
    """Rotate x [B, H, L, D] by fused tables broadcastable to it; computed in x's dtype."""
    return x * tables.cos + swap_pairs(x) * tables.sin
