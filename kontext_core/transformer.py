"""The FLUX.1 transformer as used by Kontext, with BFL's module and parameter names.

Native parameter names follow BFL's ``flux`` checkpoints, so their single files load without
renaming; diffusers checkpoints go through the tables in ``kontext_core.checkpoint``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import TransformerConfig
from .rope import ComplexRope, apply_rope, apply_rope_complex, complex_table, rope_table
from .speed.fused_rope import FusedRope, apply_rope_fused, fused_tables
from .step_cache import FirstBlockCache

ROPE_MODES = ("exact", "fused")
# Plain matmul attention (q·kᵀ, softmax, ·v in chunks of rows x heads) beats the fused CPU SDPA
# kernel while one score matrix is small: measured on a shared 2-core CPU (kontext-tiny, 2026-12)
# ~1.3x faster at 152 tokens, about even at 256-400, behind beyond. Chunks of ~512 KiB of scores measured
# fastest (2^16..2^18 elements tried); q is scaled before q·kᵀ (L·D products instead of L·L).
PLAIN_ATTENTION_MAX_TOKENS = 256
_SCORE_CHUNK_ELEMENTS = 1 << 17


_GELU_2C = 2 * math.sqrt(2 / math.pi)


def _eager_inference() -> bool:
    """True where in-place and out= tricks are safe: no autograd, not being traced by dynamo."""
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling()


def _eager_cpu_float32(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and _eager_inference()


def gelu_tanh_(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation in place, as x·sigmoid(2z) with z = √(2/π)·(x + 0.044715·x³):
    the same function (½(1 + tanh z) = sigmoid(2z)), as close to it in float32 as ATen's gelu
    (~5e-7 at |x| ~ 8), in half the time on the CPU."""
    u = x * x
    u.mul_(0.044715 * _GELU_2C).add_(_GELU_2C).mul_(x).sigmoid_()
    return x.mul_(u)


def _run_mlp(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Linear, GELU(tanh), Linear; the linears are called as modules (their hooks run)."""
    if not _eager_cpu_float32(x):
        return mlp(x)
    return mlp[2](gelu_tanh_(mlp[0](x)))


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t ∈ [0, 1] (scaled by 1000), [cos, sin] order, float32 frequencies."""
    t = 1000.0 * t
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return emb.to(t.dtype) if torch.is_floating_point(t) else emb


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int):
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, bias=True)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(F.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    """RMS norm computed in float32, cast back, then scaled (BFL)."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        return xf.to(x.dtype) * self.scale


class QKNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.query_norm = RMSNorm(dim)
        self.key_norm = RMSNorm(dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.query_norm(q).to(v.dtype), self.key_norm(k).to(v.dtype)

    def joint(self, qk: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """q and k together, qk [..., 2, H, D]: RMSNorm's operations elementwise, so the values
        equal ``forward``'s bit for bit, in one pass of each operation instead of two."""
        xf = qk.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + 1e-6)
        scale = torch.stack((self.query_norm.scale, self.key_norm.scale))[:, None, :]  # [2, 1, D]
        return (xf.to(qk.dtype) * scale).to(dtype)


class SelfAttention(nn.Module):
    """Parameters of one stream's attention: fused qkv, QK norm, output projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.norm = QKNorm(dim // num_heads)
        self.proj = nn.Linear(dim, dim)

    def qkv_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, C] -> normalised qk [2, B, H, L, D] and v [B, H, L, D] (see split_heads)."""
        return split_heads(self.qkv(x), self.num_heads, self.norm)


def split_heads(qkv: torch.Tensor, num_heads: int, norm: QKNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L, 3·H·D] laid out (K H D) -> qk [2, B, H, L, D] (q then k, RMS-normalised; a view
    of one tensor) and v [B, H, L, D] (a view of qkv)."""
    b, length, _ = qkv.shape
    heads = qkv.view(b, length, 3, num_heads, -1)
    qk = norm.joint(heads[:, :, :2], qkv.dtype).permute(2, 0, 3, 1, 4)
    return qk, heads[:, :, 2].transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pe) -> torch.Tensor:
    """RoPE then unmasked attention; [B, H, L, D] -> [B, L, H·D]. ``pe``: (cos, sin), ComplexRope or FusedRope."""
    return joint_attention([(torch.stack((q, k)), v)], pe).transpose(1, 2).flatten(2)


def per_stream(out: torch.Tensor, lengths: list[int]) -> list[torch.Tensor]:
    """joint_attention's [B, H, ΣL_i, D] -> each stream's [B, L_i, H·D], each contiguous (so its
    output projection is one fused matmul, no further copy)."""
    return [part.transpose(1, 2).flatten(2) for part in out.split(lengths, dim=2)]


def joint_attention(streams: list[tuple[torch.Tensor, torch.Tensor]], pe) -> torch.Tensor:
    """Attention over the streams' tokens joined in order (text first): each stream's (qk, v) as
    split_heads returns them -> [B, H, ΣL_i, D]. Eagerly on the CPU q and k are rotated together,
    straight into one joined tensor (no concatenation of rotated copies)."""
    v = torch.cat([s[1] for s in streams], dim=2) if len(streams) > 1 else streams[0][1]
    qks = [s[0] for s in streams]
    if isinstance(pe, ComplexRope) and qks[0].dtype == torch.float32 and _eager_inference():
        q, k = _rope_complex_joined(qks, pe)
    else:
        q = _rope(torch.cat([qk[0] for qk in qks], dim=2) if len(qks) > 1 else qks[0][0], pe)
        k = _rope(torch.cat([qk[1] for qk in qks], dim=2) if len(qks) > 1 else qks[0][1], pe)
    return _attend(q, k, v)


def _rope(x: torch.Tensor, pe) -> torch.Tensor:
    if isinstance(pe, FusedRope):
        return apply_rope_fused(x, pe)
    if isinstance(pe, ComplexRope) and _eager_inference():
        return apply_rope_complex(x, pe.table)
    cos, sin = pe[:2]
    return apply_rope(x, cos, sin)


def _rope_complex_joined(qks: list[torch.Tensor], pe: ComplexRope) -> torch.Tensor:
    """Each stream's qk [2, B, H, L_i, D] rotated into its token slice of one [2, B, H, ΣL_i, D]."""
    two, b, h, _, d = qks[0].shape
    out = qks[0].new_empty(two, b, h, sum(qk.shape[3] for qk in qks), d)
    start = 0
    for qk in qks:
        stop = start + qk.shape[3]
        apply_rope_complex(qk, pe.tokens(start, stop), out=out[:, :, :, start:stop])
        start = stop
    return out


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q·kᵀ/√D)·v, [B, H, L, D]: plain matmuls where measured faster, else SDPA."""
    plain = q.device.type == "cpu" and q.dtype == torch.float32 and q.shape[2] <= PLAIN_ATTENTION_MAX_TOKENS
    if not (plain and _eager_inference()):
        return F.scaled_dot_product_attention(q, k, v)
    b, h, length, d = q.shape
    qf, kf, vf = (t.reshape(b * h, length, d) for t in (q, k, v))
    qf = qf * d**-0.5
    out = torch.empty_like(qf)
    chunk = max(1, _SCORE_CHUNK_ELEMENTS // (length * length))
    for i in range(0, b * h, chunk):
        scores = torch.bmm(qf[i : i + chunk], kf[i : i + chunk].transpose(1, 2))
        torch.bmm(torch.softmax(scores, dim=-1), vf[i : i + chunk], out=out[i : i + chunk])
    return out.view(b, h, length, d)


@dataclass
class ModulationOut:
    shift: torch.Tensor
    scale: torch.Tensor
    gate: torch.Tensor

    def modulate(self, x: torch.Tensor) -> torch.Tensor:
        if _eager_cpu_float32(x):  # one pass instead of two
            return torch.addcmul(self.shift, x, 1 + self.scale)
        return (1 + self.scale) * x + self.shift

    def gated(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """The residual update x + gate·out."""
        if _eager_cpu_float32(x):
            return torch.addcmul(x, self.gate, out)
        return x + self.gate * out


class Modulation(nn.Module):
    """Linear(SiLU(vec)) split into (shift, scale, gate) once or twice."""

    def __init__(self, dim: int, double: bool):
        super().__init__()
        self.multiplier = 6 if double else 3
        self.lin = nn.Linear(dim, self.multiplier * dim, bias=True)

    def forward(self, vec: torch.Tensor) -> tuple[ModulationOut, ModulationOut | None]:
        out = self.lin(F.silu(vec))[:, None, :].chunk(self.multiplier, dim=-1)
        return ModulationOut(*out[:3]), ModulationOut(*out[3:]) if self.multiplier == 6 else None


def _layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)


def _mlp(dim: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden, bias=True), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim, bias=True))


class DoubleStreamBlock(nn.Module):
    """Separate weights for text and image tokens, joint attention over [txt ; img]."""

    def __init__(self, hidden: int, num_heads: int, mlp_hidden: int, qkv_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.img_mod = Modulation(hidden, double=True)
        self.img_norm1 = _layer_norm(hidden)
        self.img_attn = SelfAttention(hidden, num_heads, qkv_bias)
        self.img_norm2 = _layer_norm(hidden)
        self.img_mlp = _mlp(hidden, mlp_hidden)
        self.txt_mod = Modulation(hidden, double=True)
        self.txt_norm1 = _layer_norm(hidden)
        self.txt_attn = SelfAttention(hidden, num_heads, qkv_bias)
        self.txt_norm2 = _layer_norm(hidden)
        self.txt_mlp = _mlp(hidden, mlp_hidden)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe) -> tuple[torch.Tensor, torch.Tensor]:
        img_mod1, img_mod2 = self.img_mod(vec)
        txt_mod1, txt_mod2 = self.txt_mod(vec)
        img_heads = self.img_attn.qkv_heads(img_mod1.modulate(self.img_norm1(img)))
        txt_heads = self.txt_attn.qkv_heads(txt_mod1.modulate(self.txt_norm1(txt)))
        attn = joint_attention([txt_heads, img_heads], pe)
        txt_attn, img_attn = per_stream(attn, [txt.shape[1], img.shape[1]])
        img = img_mod1.gated(img, self.img_attn.proj(img_attn))
        img = img_mod2.gated(img, _run_mlp(self.img_mlp, img_mod2.modulate(self.img_norm2(img))))
        txt = txt_mod1.gated(txt, self.txt_attn.proj(txt_attn))
        txt = txt_mod2.gated(txt, _run_mlp(self.txt_mlp, txt_mod2.modulate(self.txt_norm2(txt))))
        return img, txt


class SingleStreamBlock(nn.Module):
    """One fused linear for qkv and the MLP input, attention and MLP in parallel."""

    def __init__(self, hidden: int, num_heads: int, mlp_hidden: int):
        super().__init__()
        self.hidden = hidden
        self.num_heads = num_heads
        self.mlp_hidden = mlp_hidden
        self.linear1 = nn.Linear(hidden, hidden * 3 + mlp_hidden)
        self.linear2 = nn.Linear(hidden + mlp_hidden, hidden)
        self.norm = QKNorm(hidden // num_heads)
        self.pre_norm = _layer_norm(hidden)
        self.mlp_act = nn.GELU(approximate="tanh")
        self.modulation = Modulation(hidden, double=False)

    def forward(self, x: torch.Tensor, vec: torch.Tensor, pe) -> torch.Tensor:
        mod, _ = self.modulation(vec)
        hidden = self.linear1(mod.modulate(self.pre_norm(x)))
        qkv, mlp = torch.split(hidden, [3 * self.hidden, self.mlp_hidden], dim=-1)
        attn = joint_attention([split_heads(qkv, self.num_heads, self.norm)], pe)  # [B, H, L, D]
        if _eager_cpu_float32(hidden):
            out = self.linear2(self._into_linear1_output(hidden, attn))
        else:
            out = self.linear2(torch.cat((attn.transpose(1, 2).flatten(2), self.mlp_act(mlp)), dim=2))
        return mod.gated(x, out)

    def _into_linear1_output(self, hidden: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """linear2's input [attn ; act(mlp)] without a concatenation: linear1's output is laid out
        [q k v | mlp], so the attention output goes where v was (v is used up by then) and the
        activation is applied in place; the view from v's slot on is that input."""
        c = self.hidden
        hidden[..., 2 * c : 3 * c].unflatten(-1, (self.num_heads, -1)).copy_(attn.transpose(1, 2))
        gelu_tanh_(hidden[..., 3 * c :])
        return hidden[..., 2 * c :]


class LastLayer(nn.Module):
    def __init__(self, hidden: int, out_channels: int):
        super().__init__()
        self.norm_final = _layer_norm(hidden)
        self.linear = nn.Linear(hidden, out_channels, bias=True)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden, bias=True))

    def forward(self, x: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(vec).chunk(2, dim=1)
        return self.linear((1 + scale[:, None, :]) * self.norm_final(x) + shift[:, None, :])


class KontextTransformer(nn.Module):
    """FLUX.1 flow transformer. ``forward`` reads like BFL's ``Flux.forward``."""

    def __init__(self, config: TransformerConfig, rope_mode: str = "exact"):
        super().__init__()
        config.validate()
        self.config = config
        self.rope_mode = rope_mode  # "exact" (float32 RoPE) or "fused" (kontext_core.speed.fused_rope)
        c = config
        self.img_in = nn.Linear(c.in_channels, c.hidden_size, bias=True)
        self.time_in = MLPEmbedder(256, c.hidden_size)
        self.vector_in = MLPEmbedder(c.vec_in_dim, c.hidden_size)
        self.guidance_in = MLPEmbedder(256, c.hidden_size) if c.guidance_embed else nn.Identity()
        self.txt_in = nn.Linear(c.context_in_dim, c.hidden_size)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(c.hidden_size, c.num_heads, c.mlp_hidden, c.qkv_bias) for _ in range(c.depth)
        )
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(c.hidden_size, c.num_heads, c.mlp_hidden) for _ in range(c.depth_single_blocks)
        )
        self.final_layer = LastLayer(c.hidden_size, c.out_channels)

    def rope(self, ids: torch.Tensor):
        """RoPE tables for ids [B or 1, L, 3] (text ids first), shaped to broadcast over heads:
        (cos, sin); on the CPU a ComplexRope (the same tables, and the same rotation as one complex
        table); with ``rope_mode == "fused"`` a FusedRope in the compute dtype (the txt_in weight's)."""
        if self.rope_mode not in ROPE_MODES:
            raise ValueError(f"rope_mode {self.rope_mode!r} is not one of {', '.join(ROPE_MODES)}")
        cos, sin = rope_table(ids, self.config.axes_dim, self.config.theta)
        if self.rope_mode == "fused":
            return fused_tables(cos[:, None], sin[:, None], self.txt_in.weight.dtype)
        if ids.device.type == "cpu":  # the same rotation, bit for bit, in one complex multiply
            return complex_table(cos[:, None], sin[:, None])
        return cos[:, None], sin[:, None]

    def forward(
        self,
        img: torch.Tensor,
        img_ids: torch.Tensor,
        txt: torch.Tensor,
        txt_ids: torch.Tensor,
        timesteps: torch.Tensor,
        y: torch.Tensor,
        guidance: torch.Tensor | None = None,
        pe: tuple[torch.Tensor, torch.Tensor] | None = None,
        step_cache: FirstBlockCache | None = None,
    ) -> torch.Tensor:
        """img [B, N, in], txt [B, L, ctx], y [B, vec], timesteps/guidance [B] in [0, 1] / raw g.

        ``pe`` may be passed precomputed (it depends only on the ids, constant across steps).
        ``step_cache`` (opt-in approximation) may skip all blocks after the first (see step_cache).
        """
        img = self.img_in(img)
        vec = self.time_in(timestep_embedding(timesteps, 256))
        if self.config.guidance_embed:
            if guidance is None:
                raise ValueError("this model embeds guidance: pass guidance")
            vec = vec + self.guidance_in(timestep_embedding(guidance, 256))
        vec = vec + self.vector_in(y)
        txt = self.txt_in(txt)
        if pe is None:
            pe = self.rope(torch.cat((txt_ids, img_ids), dim=1))
        if step_cache is None:
            return self.final_layer(self._blocks(img, txt, vec, pe, first=0), vec)
        img_in = img
        img, txt = self.double_blocks[0](img, txt, vec, pe)
        first_residual = img - img_in
        reuse = step_cache.reuse_mask(first_residual)
        computed = None if bool(reuse.all()) else self._blocks(img, txt, vec, pe, first=1)
        return self.final_layer(step_cache.combine(reuse, first_residual, img, computed), vec)

    def _blocks(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor, pe, first: int) -> torch.Tensor:
        """Double blocks from index ``first`` on, then the single blocks; returns image tokens."""
        for block in self.double_blocks[first:]:
            img, txt = block(img, txt, vec, pe)
        x = torch.cat((txt, img), dim=1)
        for block in self.single_blocks:
            x = block(x, vec, pe)
        return x[:, txt.shape[1] :]
