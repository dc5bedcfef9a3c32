"""The transformer's eager CPU inference paths: complex-multiply RoPE written into the joined
q/k, plain matmul attention at small token counts, the single block's in-place buffers. Each is
checked against the plain path (apply_rope, concatenation, SDPA) that autograd and compile use."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import profile

from kontext_core.config import load_preset
from kontext_core.rope import ComplexRope, apply_rope, apply_rope_complex, complex_table, rope_table
from kontext_core.sampling import image_ids
from kontext_core.transformer import (
    PLAIN_ATTENTION_MAX_TOKENS,
    KontextTransformer,
    gelu_tanh_,
    joint_attention,
)

CFG = load_preset("tiny-random").transformer


def _tables(n_txt: int, rows: int, cols: int) -> ComplexRope:
    ids = torch.cat((torch.zeros(1, n_txt, 3), image_ids(rows, cols, 0.0), image_ids(rows, cols, 1.0)), dim=1)
    cos, sin = rope_table(ids, CFG.axes_dim, CFG.theta)
    return complex_table(cos[:, None], sin[:, None])


def _model() -> KontextTransformer:
    torch.manual_seed(0)
    return KontextTransformer(CFG).eval()


def _inputs(batch: int, rows: int, cols: int, n_txt: int = 16) -> dict:
    g = torch.Generator().manual_seed(1)
    n_img = 2 * rows * cols  # target + context tokens, as an edit passes them
    return dict(img=torch.randn(batch, n_img, CFG.in_channels, generator=g),
                img_ids=torch.cat((image_ids(rows, cols, 0.0), image_ids(rows, cols, 1.0)), dim=1),
                txt=torch.randn(batch, n_txt, CFG.context_in_dim, generator=g), txt_ids=torch.zeros(1, n_txt, 3),
                timesteps=torch.linspace(0.2, 0.9, batch), y=torch.randn(batch, CFG.vec_in_dim, generator=g),
                guidance=torch.full((batch,), 2.5))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _op_counts(fn) -> dict[str, int]:
    with profile() as prof:
        fn()
    return {e.key: e.count for e in prof.key_averages()}


@pytest.mark.parametrize("length", [7, 40, 152])
def test_complex_rope_is_bit_identical_to_apply_rope(length: int) -> None:
    pe = complex_table(*_halves(length))
    torch.manual_seed(length)
    qkv = torch.randn(3, length, 3, 2, CFG.head_dim)  # [B, L, (q k v), H, D] as the fused linear lays it out
    q = qkv.permute(2, 0, 3, 1, 4)[0]  # a strided view, as split_heads hands it over
    assert torch.equal(apply_rope_complex(q, pe.table), apply_rope(q, pe.cos, pe.sin))
    out = torch.zeros(3, 2, length + 5, CFG.head_dim)
    apply_rope_complex(q, pe.table, out=out[:, :, 5:])  # into one stream's slice of a joined tensor
    assert torch.equal(out[:, :, 5:], apply_rope(q, pe.cos, pe.sin))
    assert not out[:, :, :5].any()


def _halves(length: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.stack((torch.zeros(length), torch.arange(length) * 1.0, torch.arange(length) * 2.0), -1)[None]
    cos, sin = rope_table(ids, CFG.axes_dim, CFG.theta)
    return cos[:, None], sin[:, None]


def test_joint_attention_equals_rotating_the_concatenation_then_sdpa() -> None:
    pe = _tables(16, 4, 8)  # 16 text + 64 image tokens
    torch.manual_seed(3)
    streams = [(torch.randn(2, 2, 3, n, CFG.head_dim), torch.randn(2, 3, n, CFG.head_dim)) for n in (16, 64)]
    with torch.inference_mode():
        fast = joint_attention(streams, pe).transpose(1, 2).flatten(2)  # each stream's (qk, v)
    q, k = (torch.cat([qk[i] for qk, _ in streams], dim=2) for i in range(2))
    v = torch.cat([v for _, v in streams], dim=2)
    ref = F.scaled_dot_product_attention(apply_rope(q, pe.cos, pe.sin), apply_rope(k, pe.cos, pe.sin), v)
    ref = ref.transpose(1, 2).flatten(2)
    assert fast.shape == ref.shape == (2, 80, 3 * CFG.head_dim)
    assert _rel(fast, ref) <= 1e-6


@pytest.mark.parametrize(("batch", "rows", "cols"), [(1, 4, 8), (3, 4, 8), (2, 8, 10)])
def test_inference_forward_equals_the_autograd_path(batch: int, rows: int, cols: int) -> None:
    """inference_mode takes the fast paths; with autograd on the plain ones (cat, apply_rope, SDPA).
    8x10 grids: 176 tokens, 2·80 + 16; the last case has more tokens than the plain-attention limit."""
    model, inputs = _model(), _inputs(batch, rows, cols)
    if (rows, cols) == (8, 10):
        inputs = _inputs(batch, rows, cols, n_txt=PLAIN_ATTENTION_MAX_TOKENS - 2 * rows * cols + 8)
    with torch.inference_mode():
        fast = model(**inputs)
    with torch.enable_grad():
        ref = model(**inputs).detach()
    assert fast.shape == ref.shape
    assert _rel(fast, ref) <= 1e-5


def test_cpu_inference_at_small_token_counts_runs_no_sdpa_stack_or_concatenated_heads() -> None:
    model, inputs = _model(), _inputs(2, 4, 8)
    pe = model.rope(torch.cat((inputs["txt_ids"], inputs["img_ids"]), dim=1))  # once per edit
    with torch.inference_mode():
        counts = _op_counts(lambda: model(**inputs, pe=pe))
    assert not any("scaled_dot_product" in op for op in counts)
    # one stack per QK norm (its two [D] scales), none of rotated pairs (apply_rope)
    assert counts["aten::stack"] == 2 * CFG.depth + CFG.depth_single_blocks
    # left: the two timestep embeddings' [cos, sin], v per double block, txt+img once before the
    # single blocks, and each stack's; no joined q/k (rotated into place), nor linear2's input
    assert counts["aten::cat"] == 2 + CFG.depth + 1 + counts["aten::stack"]
    assert "aten::gelu" not in counts and "aten::gelu_" not in counts  # gelu_tanh_ instead


def test_cpu_inference_above_the_token_limit_keeps_sdpa() -> None:
    model, inputs = _model(), _inputs(1, 8, 16, n_txt=8)  # 2·128 + 8 tokens > the limit
    assert 2 * 128 + 8 > PLAIN_ATTENTION_MAX_TOKENS
    with torch.inference_mode():
        counts = _op_counts(lambda: model(**inputs))
    assert sum(c for op, c in counts.items() if "scaled_dot_product" in op) >= CFG.depth + CFG.depth_single_blocks


def test_gelu_tanh_in_place_is_aten_gelu_within_float32_rounding() -> None:
    x = torch.linspace(-12, 12, 100_001)
    ref = F.gelu(x.double(), approximate="tanh")
    ours = gelu_tanh_(x.clone())
    aten_err = float((F.gelu(x, approximate="tanh").double() - ref).abs().max())
    assert float((ours.double() - ref).abs().max()) <= 2 * aten_err
    assert float(((ours.double() - ref).abs() / ref.abs().clamp_min(1e-3)).max()) < 1e-5
    view = torch.zeros(4, 10)
    view[:, 5:] = 1.5
    gelu_tanh_(view[:, 5:])  # in place on a strided slice, as the single blocks use it
    assert torch.allclose(view[:, 5:], F.gelu(torch.tensor(1.5), approximate="tanh").expand(4, 5))
    assert not view[:, :5].any()


def test_joint_qk_norm_equals_the_separate_norms_bit_for_bit() -> None:
    model = _model()
    norm = model.double_blocks[0].img_attn.norm
    with torch.no_grad():
        norm.query_norm.scale.uniform_(0.5, 1.5)
        norm.key_norm.scale.uniform_(0.5, 1.5)
    heads = torch.randn(2, 40, 3, CFG.num_heads, CFG.head_dim)  # [B, L, (q k v), H, D]
    joint = norm.joint(heads[:, :, :2], torch.float32)
    q, k = norm(heads[:, :, 0], heads[:, :, 1], heads[:, :, 2])
    assert torch.equal(joint[:, :, 0], q) and torch.equal(joint[:, :, 1], k)
