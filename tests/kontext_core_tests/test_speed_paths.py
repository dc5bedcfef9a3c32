"""kontext_core.speed on the CPU: fused RoPE, fp8 row-wise linears (emulated), compile buckets.

Numerics only (no timings): the GPU speed figures come from benchmarks/bench_gpu.py.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from PIL import Image

from kontext_core import KontextEditor
from kontext_core.config import load_preset
from kontext_core.rope import apply_rope, rope_table
from kontext_core.sampling import image_ids
from kontext_core.speed import (
    Fp8Linear,
    Fp8UnsupportedError,
    ShapeBucket,
    SpeedOptions,
    apply_rope_fused,
    compile_blocks,
    default_cache_dir,
    fused_tables,
    preferred_buckets,
    quantize_rows,
    swap_fp8_linears,
    warm_up,
)
from kontext_core.speed.fp8 import FP8_DTYPE, choose_backend
from kontext_core.transformer import KontextTransformer

CFG = load_preset("tiny-random").transformer


def _rope_inputs(dtype: torch.dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 40, CFG.head_dim, dtype=dtype)
    ids = torch.cat((torch.zeros(1, 8, 3), image_ids(4, 8, 1.0)), dim=1)
    cos, sin = rope_table(ids, CFG.axes_dim, CFG.theta)
    return x, cos[:, None], sin[:, None]


def _model(seed: int = 0) -> KontextTransformer:
    torch.manual_seed(seed)
    return KontextTransformer(CFG).eval()


def _inputs(batch: int = 2, n_img: int = 64, n_txt: int = 16, dtype=torch.float32) -> dict:
    g = torch.Generator().manual_seed(1)
    return dict(img=torch.randn(batch, n_img, CFG.in_channels, generator=g, dtype=dtype),
                img_ids=image_ids(8, n_img // 8, 0.0), txt=torch.randn(batch, n_txt, CFG.context_in_dim, generator=g,
                                                                   dtype=dtype),
                txt_ids=torch.zeros(1, n_txt, 3), timesteps=torch.linspace(0.2, 0.9, batch, dtype=dtype),
                y=torch.randn(batch, CFG.vec_in_dim, generator=g, dtype=dtype),
                guidance=torch.full((batch,), 2.5, dtype=dtype))


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


# -- fused RoPE ------------------------------------------------------------------------------
def test_fused_rope_matches_apply_rope_in_float32() -> None:
    x, cos, sin = _rope_inputs(torch.float32)
    diff = (apply_rope_fused(x, fused_tables(cos, sin, torch.float32)) - apply_rope(x, cos, sin)).abs().max()
    assert float(diff) <= 1e-6


def test_fused_rope_in_bfloat16_stays_within_bfloat16_rounding() -> None:
    x, cos, sin = _rope_inputs(torch.bfloat16)
    tables = fused_tables(cos, sin, torch.bfloat16)
    assert tables.cos.dtype == torch.bfloat16 and tables.cos.shape[-1] == CFG.head_dim
    fused, exact = apply_rope_fused(x, tables), apply_rope(x, cos, sin)
    assert fused.dtype == torch.bfloat16
    assert _rel(fused, exact) < 4e-3  # bf16 has 8 mantissa bits: one rounding is ≤ 2^-9 ≈ 2e-3
    assert not torch.equal(fused, exact)  # products rounded in bf16: really a different computation


def test_transformer_fused_rope_mode_is_the_same_model_in_float32() -> None:
    model, inputs = _model(), _inputs()
    with torch.no_grad():
        exact = model(**inputs)
        model.rope_mode = "fused"
        fused = model(**inputs)
    assert float((fused - exact).abs().max()) <= 1e-5
    model.rope_mode = "fast"
    with pytest.raises(ValueError, match="rope_mode 'fast' is not one of exact, fused"):
        model(**inputs)


def test_transformer_fused_rope_in_bfloat16_is_close_to_exact() -> None:
    model, inputs = _model().to(torch.bfloat16), _inputs(dtype=torch.bfloat16)
    with torch.no_grad():
        exact = model(**inputs)
        model.rope_mode = "fused"
        assert model.rope(torch.zeros(1, 4, 3)).cos.dtype == torch.bfloat16
        fused = model(**inputs)
    assert _rel(fused, exact) < 2e-2


# -- fp8 ------------------------------------------------------------------------------------
def test_quantize_rows_scales_each_row_to_the_fp8_range() -> None:
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [300.0, 1e-3, -600.0]])
    q, scale = quantize_rows(x)
    assert q.dtype == FP8_DTYPE and scale.shape == (3, 1) and scale.dtype == torch.float32
    assert q.float().abs().amax(dim=1).tolist() == [448.0, 0.0, 448.0]  # each row's amax maps to 448
    assert torch.isfinite(q.float()).all()  # an all-zero row must not divide by zero
    assert _rel(q.float() * scale, x) < 0.05


def test_fp8_linear_is_close_to_the_linear_it_replaces() -> None:
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 128)
    fp8 = Fp8Linear.from_linear(linear, "emulate")
    x = torch.randn(3, 10, 256)
    with torch.no_grad():
        exact, approx = linear(x), fp8(x)
    assert approx.shape == exact.shape and approx.dtype == exact.dtype
    # e4m3 keeps 3 mantissa bits: each operand is off by ≤ 1/16 relative (~3.6 % rms); the dot
    # products average most of it out.
    assert 1e-3 < _rel(approx, exact) < 0.05


@pytest.mark.skipif(not hasattr(torch, "_scaled_mm"), reason="torch._scaled_mm missing")
def test_scaled_mm_call_layout_matches_the_emulation() -> None:
    """The CUDA code path's argument layout (column-major weight, [M,1]/[1,N] scales), checked with
    torch's CPU _scaled_mm where this torch build has one."""
    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 48).to(torch.bfloat16)
    x = torch.randn(2, 5, 64, dtype=torch.bfloat16)
    kernel, emulated = Fp8Linear.from_linear(linear, "scaled_mm"), Fp8Linear.from_linear(linear, "emulate")
    try:
        with torch.no_grad():
            got = kernel(x)
    except (RuntimeError, NotImplementedError) as exc:
        pytest.skip(f"no CPU _scaled_mm kernel in this torch: {exc}")
    with torch.no_grad():
        want = emulated(x)
    assert got.dtype == torch.bfloat16 and _rel(got, want) < 1e-2  # only accumulation/bf16 rounding


def test_swap_counts_the_block_linears_and_stays_close_to_the_unquantized_model(capsys) -> None:
    model, inputs = _model(), _inputs()
    quantized = copy.deepcopy(model)
    report = swap_fp8_linears(quantized)
    assert "emulating" in capsys.readouterr().err  # CPU: the emulation says so
    # 8 per double block (img/txt qkv, proj, mlp×2), 2 per single block; modulation, embedders and
    # the final layer stay (3 modulation + 6 embedder MLP + img_in + txt_in + 2 final = 13 here).
    assert report.swapped == 8 * CFG.depth + 2 * CFG.depth_single_blocks == 10
    assert report.kept == 13 and report.backend == "emulate"
    assert report.weight_bytes_after < report.weight_bytes_before / 3
    assert isinstance(quantized.double_blocks[0].img_attn.qkv, Fp8Linear)
    assert isinstance(quantized.double_blocks[0].img_mod.lin, torch.nn.Linear)
    assert isinstance(quantized.final_layer.linear, torch.nn.Linear)
    with torch.no_grad():
        exact, approx = model(**inputs), quantized(**inputs)
    assert 1e-4 < _rel(approx, exact) < 0.02  # measured 0.003 on tiny-random


def test_fp8_state_round_trips_into_a_fresh_swapped_model() -> None:
    source = _model(seed=0)
    swap_fp8_linears(source, quiet=True)
    state = source.state_dict()
    assert state["single_blocks.0.linear1.weight_fp8"].dtype == FP8_DTYPE
    assert "single_blocks.0.linear1.weight" not in state
    target = _model(seed=7)
    swap_fp8_linears(target, quiet=True)
    target.load_state_dict(state)
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(source(**inputs), target(**inputs))


def test_fp8_backend_choice_and_the_error_on_gpus_without_fp8(monkeypatch) -> None:
    assert choose_backend(torch.device("cpu")) == "emulate"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    with pytest.raises(Fp8UnsupportedError, match=r"8\.9.*A100.*\(8, 0\).*without --fp8"):
        choose_backend(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert choose_backend(torch.device("cuda")) == "scaled_mm"


def test_swap_refuses_a_model_without_blocks() -> None:
    with pytest.raises(ValueError, match="no block linears"):
        swap_fp8_linears(torch.nn.Sequential(torch.nn.Linear(4, 4)))


# -- editor options --------------------------------------------------------------------------
def _pixels(out) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in out.images])


def test_editor_speed_options_exact_path_keeps_pixels_fp8_changes_them_a_little() -> None:
    images = [Image.new("RGB", (40, 40), (200, 30, 30)), Image.new("RGB", (40, 40), (20, 90, 200))]
    args = (images, ["make it blue", "add a hat"], [3, 4])
    plain = KontextEditor.load("tiny-random")
    assert plain.speed == SpeedOptions() and plain.speed_report.fp8 is None
    fused = KontextEditor.load("tiny-random", speed=SpeedOptions(fused_rope=True))
    assert fused.transformer.rope_mode == "fused"
    fp8 = KontextEditor.load("tiny-random", speed=SpeedOptions(fp8=True))
    assert fp8.speed_report.fp8.swapped == 10 and fp8.speed.fp8 is True
    base = _pixels(plain.edit(*args))
    assert np.abs(_pixels(fused.edit(*args)) - base).max() <= 1  # fp32: same model up to rounding
    fp8_px = _pixels(fp8.edit(*args))
    diff = np.abs(fp8_px - base)
    assert diff.max() > 0 and diff.mean() < 1.0  # changes pixels (so it is keyed apart), slightly


# -- compile ---------------------------------------------------------------------------------
def test_preferred_buckets_are_the_kontext_token_counts() -> None:
    buckets = preferred_buckets()
    assert ShapeBucket(1, 512, 2 * 64 * 64) in buckets  # 1024² target + 1024² context
    assert len(buckets) == 9  # 17 resolutions; portrait and landscape of a size share a bucket
    assert all(b.tokens == 512 + b.img_tokens for b in buckets)
    assert len(preferred_buckets(batch_sizes=(1, 2, 4))) == 27
    assert preferred_buckets(with_context=False, resolutions=[(1024, 1024)]) == [ShapeBucket(1, 512, 4096)]
    # kontext-tiny's 8-px tokens: a 64² edit is 64 target + 64 context tokens
    assert preferred_buckets(24, resolutions=[(64, 64)], pixels_per_token=8) == [ShapeBucket(1, 24, 128)]


def test_compile_cache_dir_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("KONTEXT_COMPILE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "kontext-batch" / "torch-compile"
    monkeypatch.setenv("KONTEXT_COMPILE_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


@pytest.mark.slow
def test_compiled_blocks_match_eager_and_fill_the_disk_cache(monkeypatch, tmp_path) -> None:
    """Inductor on the CPU (gcc): ~25 s on a shared 2-core machine, hence slow."""
    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)  # compile_blocks sets them; restored after the test
    model, inputs = _model(), _inputs(batch=1)
    with torch.inference_mode():
        eager = model(**inputs)
    cache = compile_blocks(model, tmp_path / "cache")
    assert warm_up(model, [ShapeBucket(1, 16, 64)], progress=False) == 1
    with torch.inference_mode():
        compiled = model(**inputs)
    assert float((compiled - eager).abs().max()) < 1e-4
    assert any((cache / "inductor").rglob("*"))  # compiled artefacts on disk for the next process
    torch._dynamo.reset()
