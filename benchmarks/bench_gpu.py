"""GPU benchmark: kontext_core's transformer vs diffusers' FluxTransformer2DModel, same weights.

Run on a GPU machine (needs diffusers):  python benchmarks/bench_gpu.py --out results.json
Builds diffusers' model at full FLUX.1 Kontext [dev] size with random bf16 weights, converts the
weights to ours with kontext_core's key tables, feeds both the same Kontext-shaped inputs
(512 text + target + context tokens) and reports per-step and per-image (28 steps) time, TFLOP/s,
peak memory and the relative difference. ``--tiny`` runs the same code on a tiny config (CPU check).
Prints a table last; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import nullcontext
from datetime import date

import torch

from kontext_core.checkpoint.tables import to_native, transformer_rules
from kontext_core.config import TransformerConfig, load_preset
from kontext_core.sampling import image_ids
from kontext_core.transformer import KontextTransformer


def diffusers_kwargs(cfg: TransformerConfig) -> dict:
    return dict(patch_size=1, in_channels=cfg.in_channels, num_layers=cfg.depth,
                num_single_layers=cfg.depth_single_blocks, attention_head_dim=cfg.head_dim,
                num_attention_heads=cfg.num_heads, joint_attention_dim=cfg.context_in_dim,
                pooled_projection_dim=cfg.vec_in_dim, guidance_embeds=cfg.guidance_embed,
                axes_dims_rope=tuple(cfg.axes_dim))


def flops_per_step(cfg: TransformerConfig, n_img: int, n_txt: int) -> tuple[float, float]:
    """(linear FLOPs, attention FLOPs) of one forward pass."""
    h, m = cfg.hidden_size, cfg.mlp_hidden
    seq = n_img + n_txt
    double = seq * h * (3 * h + h + 2 * m) * cfg.depth
    single = seq * (h * (3 * h + m) + (h + m) * h) * cfg.depth_single_blocks
    attn = 4 * seq * seq * h * (cfg.depth + cfg.depth_single_blocks)
    return 2.0 * (double + single), float(attn)


def timed(fn, warmup: int, reps: int, cuda: bool) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=1024, help="target and context side in pixels")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny config (CPU smoke test of this script)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of ours")
    ap.add_argument("--out", default="bench_gpu.json")
    args = ap.parse_args(argv)
    from diffusers import FluxTransformer2DModel

    cuda = torch.cuda.is_available() and not args.tiny
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = load_preset("tiny-random").transformer if args.tiny else load_preset("flux.1-kontext-dev").transformer
    ppt = 16
    side = args.size // ppt
    n_img = 2 * side * side
    n_txt = 512 if not args.tiny else 16
    torch.manual_seed(0)
    result: dict = {"date": date.today().isoformat(), "device": torch.cuda.get_device_name() if cuda else platform.processor(),
                    "torch": torch.__version__, "size": args.size, "tokens": n_img + n_txt, "dtype": str(dtype)}

    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with device:
        ref = FluxTransformer2DModel(**diffusers_kwargs(cfg)).eval()
    torch.set_default_dtype(prev)
    with torch.device("meta"):
        ours = KontextTransformer(cfg)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    native = to_native(ref.state_dict(), transformer_rules(cfg), shapes)
    ours.load_state_dict(native, assign=True)
    ours.eval()
    del native

    x = torch.randn(1, n_img, cfg.in_channels, device=device, dtype=dtype)
    txt = torch.randn(1, n_txt, cfg.context_in_dim, device=device, dtype=dtype)
    y = torch.randn(1, cfg.vec_in_dim, device=device, dtype=dtype)
    t = torch.full((1,), 0.7, device=device, dtype=dtype)
    g = torch.full((1,), 2.5, device=device, dtype=dtype)
    ids = torch.cat((image_ids(side, side, 0.0, device), image_ids(side, side, 1.0, device)), dim=1)
    txt_ids = torch.zeros(1, n_txt, 3, device=device)
    pe = ours.rope(torch.cat((txt_ids, ids), dim=1))

    def run_ref():
        return ref(hidden_states=x, encoder_hidden_states=txt, pooled_projections=y, timestep=t, img_ids=ids[0],
                   txt_ids=txt_ids[0], guidance=g, return_dict=False)[0]

    def run_ours(model=ours):
        return model(img=x, img_ids=ids, txt=txt, txt_ids=txt_ids, timesteps=t, y=y, guidance=g, pe=pe)

    lin, att = flops_per_step(cfg, n_img, n_txt)
    rows = []
    with torch.inference_mode():
        out_ref, out_ours = run_ref().float(), run_ours().float()
        rel = float((out_ours - out_ref).norm() / out_ref.norm())
        result["ref_norm"] = float(out_ref.norm())
        result["max_rel_diff"] = rel
        result["finite"] = bool(torch.isfinite(out_ours).all() and torch.isfinite(out_ref).all())
        variants = [("diffusers eager", run_ref, nullcontext), ("kontext_core eager", run_ours, nullcontext)]
        if cuda:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            variants.append(("kontext_core eager, cuDNN SDPA", run_ours,
                             lambda: sdpa_kernel([SDPBackend.CUDNN_ATTENTION])))
            variants.append(("kontext_core eager, flash SDPA", run_ours,
                             lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION])))
        for name, fn, ctx in variants:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            with ctx():
                times = timed(fn, args.warmup, args.reps, cuda)
            step = statistics.median(times)
            rows.append({"variant": name, "s_per_step": step, "s_per_image_28": 28 * step,
                         "tflops": (lin + att) / step / 1e12,
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                         "spread": (max(times) - min(times)) / step})
        if args.compile:
            t0 = time.perf_counter()
            compiled = torch.compile(ours)
            run_ours(compiled)
            if cuda:
                torch.cuda.synchronize()
            compile_s = time.perf_counter() - t0
            times = timed(lambda: run_ours(compiled), args.warmup, args.reps, cuda)
            step = statistics.median(times)
            rows.append({"variant": f"kontext_core torch.compile (first call {compile_s:.0f} s)", "s_per_step": step,
                         "s_per_image_28": 28 * step, "tflops": (lin + att) / step / 1e12, "peak_gib": None,
                         "spread": (max(times) - min(times)) / step})
    base = rows[0]["s_per_step"]
    for r in rows:
        r["speedup_vs_diffusers_eager"] = base / r["s_per_step"]
    result["flops_per_step"] = {"linear": lin, "attention": att}
    result["rows"] = rows
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n{result['device']} | {args.size}² target + context, {n_img + n_txt} tokens, {dtype} | "
          f"rel diff ours vs diffusers {rel:.2e} (finite: {result['finite']})")
    print(f"{'variant':48s} {'s/step':>8s} {'s/img(28)':>10s} {'TFLOP/s':>8s} {'peak GiB':>9s} {'vs diff':>8s}")
    for r in rows:
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        print(f"{r['variant']:48s} {r['s_per_step']:8.4f} {r['s_per_image_28']:10.2f} {r['tflops']:8.1f} "
              f"{peak:>9s} {r['speedup_vs_diffusers_eager']:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
