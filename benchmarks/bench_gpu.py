"""GPU benchmark: kontext_core vs diffusers at full size, exact and fast paths.

Run on a GPU machine:  python benchmarks/bench_gpu.py --out results.json     (all three parts)
                       python benchmarks/bench_gpu.py --part transformer --out t.json   (one part)
``--tiny`` runs the same code on tiny configs on the CPU (a check of this script, not a benchmark).

Parts (each prints a table and writes its JSON; with ``--part all`` one file holds every part,
rewritten after each part so a later failure keeps the earlier figures):

1. transformer — one step at 1024² target + 1024² context + 512 text tokens (8704), random bf16
   weights built by diffusers and converted with kontext_core's key tables. Rows: diffusers eager,
   ours eager (exact), fused RoPE, fused RoPE + torch.compile (per block, static shapes), fp8
   row-wise (eager and compiled), and one step-cache reused step. Per row: s/step, s/image (28),
   TFLOP/s, peak GiB, relative error vs our eager output (and vs diffusers).
2. edit — a whole edit at 1024² (text encode + context encode + 28 steps + decode) with random
   full-size modules: transformer, autoencoder, T5-XXL and CLIP-L encoders built from config on the
   GPU (random weights: timings are real, pixels are noise). Variants: eager exact, fused + compile,
   + step cache 0.1, + context at half size (512² context: 1024 context tokens instead of 4096),
   fp8 + fused + compile. Pixel differences vs the eager exact edit.
3. pipeline — ``run_batch`` over 16 rows with one Ray actor holding the GPU (num_gpus=1); the
   GPU-busy fraction comes from the run's own ledger (pipeline.reports.usage): busy / (held − load).

Compilation uses the on-disk cache (``--compile-cache``; kontext_core.speed.compile), so part 2
reuses what part 1 compiled, like a second actor would.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from contextlib import nullcontext
from datetime import date
from pathlib import Path

import torch

from kontext_core.checkpoint.tables import to_native, transformer_rules
from kontext_core.config import TransformerConfig, load_preset, preset_from_dict
from kontext_core.sampling import image_ids
from kontext_core.speed import compile_blocks, swap_fp8_linears
from kontext_core.step_cache import FirstBlockCache
from kontext_core.transformer import KontextTransformer

PARTS = ("transformer", "edit", "pipeline")
# Real FLUX.1 text encoders' shapes (T5 v1.1 XXL encoder, CLIP ViT-L/14 text model) for part 2.
T5_XXL = {"d_model": 4096, "d_ff": 10240, "d_kv": 64, "num_heads": 64, "num_layers": 24,
          "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
          "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "max_position_embeddings": 77, "projection_dim": 768, "hidden_act": "quick_gelu"}


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


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


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


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def peak_gib(cuda: bool) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if cuda else None


def reset_peak(cuda: bool) -> None:
    if cuda:
        torch.cuda.reset_peak_memory_stats()


def uncompile(transformer: KontextTransformer) -> None:
    """Undo ``compile_blocks`` (nn.Module.compile keeps the compiled callable here)."""
    for block in [*transformer.double_blocks, *transformer.single_blocks]:
        block._compiled_call_impl = None
    torch._dynamo.reset()


def free(cuda: bool) -> None:
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def setup(args) -> dict:
    cuda = torch.cuda.is_available() and not args.tiny
    return {"cuda": cuda, "device": torch.device("cuda" if cuda else "cpu"),
            "dtype": torch.bfloat16 if cuda else torch.float32,
            "preset": "tiny-random" if args.tiny else "flux.1-kontext-dev",
            "header": {"date": date.today().isoformat(),
                       "device": torch.cuda.get_device_name() if cuda else (platform.processor() or "cpu"),
                       "torch": torch.__version__, "tiny": args.tiny}}


# -- part 1: the transformer, one step ---------------------------------------------------------
def part_transformer(args, env: dict) -> dict:
    from diffusers import FluxTransformer2DModel

    cuda, device, dtype = env["cuda"], env["device"], env["dtype"]
    cfg = load_preset(env["preset"]).transformer
    side = args.size // 16
    n_img = 2 * side * side
    n_txt = 16 if args.tiny else 512
    torch.manual_seed(0)
    result: dict = {**env["header"], "size": args.size, "tokens": n_img + n_txt, "dtype": str(dtype)}

    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with device:
        ref = FluxTransformer2DModel(**diffusers_kwargs(cfg)).eval()
    torch.set_default_dtype(prev)
    with torch.device("meta"):
        ours = KontextTransformer(cfg)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    ours.load_state_dict(to_native(ref.state_dict(), transformer_rules(cfg), shapes), assign=True)
    ours.eval()

    x = torch.randn(1, n_img, cfg.in_channels, device=device, dtype=dtype)
    txt = torch.randn(1, n_txt, cfg.context_in_dim, device=device, dtype=dtype)
    y = torch.randn(1, cfg.vec_in_dim, device=device, dtype=dtype)
    g = torch.full((1,), 2.5, device=device, dtype=dtype)
    ids = torch.cat((image_ids(side, side, 0.0, device), image_ids(side, side, 1.0, device)), dim=1)
    txt_ids = torch.zeros(1, n_txt, 3, device=device)
    all_ids = torch.cat((txt_ids, ids), dim=1)

    def t_vec(t: float) -> torch.Tensor:
        return torch.full((1,), t, device=device, dtype=dtype)

    def run_ref():
        return ref(hidden_states=x, encoder_hidden_states=txt, pooled_projections=y, timestep=t_vec(0.7),
                   img_ids=ids[0], txt_ids=txt_ids[0], guidance=g, return_dict=False)[0]

    pe_by_mode: dict = {}  # RoPE tables are computed once per edit in real use, not every step

    def run_ours(t: float = 0.7, step_cache=None):
        if ours.rope_mode not in pe_by_mode:
            pe_by_mode[ours.rope_mode] = ours.rope(all_ids)
        return ours(img=x, img_ids=ids, txt=txt, txt_ids=txt_ids, timesteps=t_vec(t), y=y, guidance=g,
                    pe=pe_by_mode[ours.rope_mode], **({"step_cache": step_cache} if step_cache else {}))

    lin, att = flops_per_step(cfg, n_img, n_txt)
    rows: list[dict] = []

    def measure(name: str, fn, ctx=nullcontext, reference: torch.Tensor | None = None, flops: bool = True,
                first_call_s: float | None = None) -> torch.Tensor:
        reset_peak(cuda)
        with ctx():
            out = fn().float()
            times = timed(fn, args.warmup, args.reps, cuda)
        step = statistics.median(times)
        rows.append({"variant": name, "s_per_step": step, "s_per_image_28": 28 * step,
                     "tflops": (lin + att) / step / 1e12 if flops else None, "peak_gib": peak_gib(cuda),
                     "spread": (max(times) - min(times)) / step, "first_call_s": first_call_s,
                     "rel_err_vs_eager": rel(out, reference if reference is not None else eager_out),
                     "rel_err_vs_diffusers": rel(out, ref_out), "finite": bool(torch.isfinite(out).all())})
        print(f"  {name}: {step:.4f} s/step", flush=True)
        env["save"]({**result, "rows": rows, "partial": True})  # a later timeout keeps these rows
        return out

    with torch.inference_mode():
        ref_out = run_ref().float()
        eager_out = run_ours().float()
        result["ref_norm"] = float(ref_out.norm())
        result["max_rel_diff"] = rel(eager_out, ref_out)
        measure("diffusers FluxTransformer2DModel, eager", run_ref)
        measure("kontext_core eager (exact)", run_ours)
        if cuda and args.sdpa_variants:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            measure("kontext_core eager, cuDNN SDPA", run_ours, lambda: sdpa_kernel([SDPBackend.CUDNN_ATTENTION]))
            measure("kontext_core eager, flash SDPA", run_ours, lambda: sdpa_kernel([SDPBackend.FLASH_ATTENTION]))
        ref = None  # frees the diffusers model (run_ref is not called again)
        free(cuda)
        ours.rope_mode = "fused"
        measure("fused RoPE, eager", run_ours)
        def measure_compiled(label: str) -> None:
            """Compile the blocks, time the first (compiling) call, then measure as usual."""
            compile_blocks(ours, args.compile_cache)
            t0 = time.perf_counter()
            run_ours()
            sync(cuda)
            measure(label, run_ours, first_call_s=time.perf_counter() - t0)

        if args.compile:
            measure_compiled("fused RoPE + compile")
        # Step cache: the cost and error of one reused step (t 0.70 computed, then 0.66 reused).
        exact_next = run_ours(0.66).float()
        cache = FirstBlockCache(threshold=1e9, max_consecutive_skips=10**9)
        run_ours(0.7, cache)
        label = "fused RoPE" + (" + compile" if args.compile else "")
        measure(f"step cache, one reused step ({label})", lambda: run_ours(0.66, cache),
                reference=exact_next, flops=False)
        if args.fp8:
            uncompile(ours)
            report = swap_fp8_linears(ours)
            result["fp8"] = {"swapped": report.swapped, "kept": report.kept, "backend": report.backend,
                             "weight_gib_before": report.weight_bytes_before / 2**30,
                             "weight_gib_after": report.weight_bytes_after / 2**30}
            free(cuda)
            measure(f"fp8 row-wise ({report.backend}) + fused RoPE, eager", run_ours)
            if args.compile:
                measure_compiled("fp8 row-wise + fused RoPE + compile")
    base = rows[0]["s_per_step"]
    for r in rows:
        r["speedup_vs_diffusers_eager"] = base / r["s_per_step"]
    result["flops_per_step"] = {"linear": lin, "attention": att}
    result["rows"] = rows
    print(f"\n{result['device']} | {args.size}² target + context, {n_img + n_txt} tokens, {dtype} | "
          f"rel diff ours vs diffusers {result['max_rel_diff']:.2e}")
    print(f"{'variant':52s} {'s/step':>8s} {'s/img28':>8s} {'TFLOP/s':>8s} {'peak GiB':>8s} {'vs diff':>7s} "
          f"{'rel err':>8s} {'1st call':>8s}")
    for r in rows:
        tf = f"{r['tflops']:.1f}" if r["tflops"] is not None else "-"
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "-"
        first = f"{r['first_call_s']:.0f} s" if r["first_call_s"] is not None else "-"
        print(f"{r['variant']:52s} {r['s_per_step']:8.4f} {r['s_per_image_28']:8.2f} {tf:>8s} {peak:>8s} "
              f"{r['speedup_vs_diffusers_eager']:6.2f}x {r['rel_err_vs_eager']:8.1e} {first:>8s}")
    ours = None
    free(cuda)
    return result


# -- part 2: a whole edit ----------------------------------------------------------------------
def full_random_preset(tiny: bool):
    """flux.1-kontext-dev with real-size text encoder configs (or tiny-random for --tiny)."""
    if tiny:
        return load_preset("tiny-random")
    d = load_preset("flux.1-kontext-dev").to_dict()
    vocab = load_preset("tiny-random").text.vocabulary or ()
    d["text"].update({"t5_config": T5_XXL, "clip_config": CLIP_L, "vocabulary": list(vocab)})
    return preset_from_dict(d)


def random_editor(tiny: bool, device: torch.device, dtype: torch.dtype):
    """A KontextEditor with random modules, built directly on ``device`` in ``dtype``."""
    from kontext_core.editor import KontextEditor
    from kontext_core.loading import build_random

    preset = full_random_preset(tiny)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:
            transformer, autoencoder, text = build_random(preset, 0)
    finally:
        torch.set_default_dtype(prev)
    modules = [m.to(device=device, dtype=dtype).eval() for m in (transformer, autoencoder, text)]
    return KontextEditor(preset, *modules, device, dtype, "random-" + preset.name)


def test_images(n: int, size: int) -> list:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        base = (torch.rand(3, generator=gen) * 255).to(torch.uint8)
        img = base[:, None, None].expand(3, size, size).clone()
        img[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255 - base[:, None, None]
        out.append(Image.fromarray(img.permute(1, 2, 0).numpy()))
    return out


def part_edit(args, env: dict) -> dict:
    import numpy as np

    from kontext_core.speed import apply_speed
    from kontext_core.speed.options import SpeedOptions

    cuda, device, dtype = env["cuda"], env["device"], env["dtype"]
    t0 = time.perf_counter()
    editor = random_editor(args.tiny, device, dtype)
    sync(cuda)
    build_s = time.perf_counter() - t0
    size = 64 if args.tiny else args.size
    steps = args.edit_steps
    image = test_images(1, size)[0]
    call = dict(images=[image], instructions=["make the background a warm studio grey"], seeds=[7], steps=steps)
    ctx_w, ctx_h = editor.context_size_for(image.size)  # the output has the context's size
    result: dict = {**env["header"], "source_size": size, "context_size": [ctx_w, ctx_h], "steps": steps, "build_s": build_s, "dtype": str(dtype),
                    "params_billion": {name: sum(p.numel() for p in m.parameters()) / 1e9
                                       for name, m in (("transformer", editor.transformer),
                                                       ("autoencoder", editor.autoencoder),
                                                       ("text", editor.text))},
                    "note": "random weights: timings are real, images are noise"}
    rows: list[dict] = []
    baseline: list = []

    def run(name: str, step_cache: float | None = None, context_scale: float | None = None) -> None:
        reset_peak(cuda)
        fast = {"step_cache": step_cache, "context_scale": context_scale}
        w0 = time.perf_counter()
        editor.edit(**{**call, "steps": 2}, **fast)  # warm-up: compiles (or loads) here
        sync(cuda)
        warm_s = time.perf_counter() - w0
        w0 = time.perf_counter()
        out = editor.edit(**call, **fast)
        sync(cuda)
        wall = time.perf_counter() - w0
        px = np.asarray(out.images[0], dtype=np.float64)
        if not baseline:
            baseline.append(px)
        diff = np.abs(px - baseline[0])
        mse = float((diff ** 2).mean())
        rows.append({"variant": name, "s_per_image": wall, **{f"{k}_s": v for k, v in out.timings.items()},
                     "warmup_2_steps_s": warm_s, "peak_gib": peak_gib(cuda),
                     "step_cache_reused": out.step_cache_reused, "row_steps": out.row_steps,
                     "pixel_mae_vs_eager": float(diff.mean()),
                     "psnr_vs_eager_db": None if mse == 0 else 10 * float(np.log10(255.0 ** 2 / mse))})
        print(f"  {name}: {wall:.2f} s/image", flush=True)
        env["save"]({**result, "rows": rows, "partial": True})

    with torch.inference_mode():
        run("eager exact")
    fused_compiled = SpeedOptions(fused_rope=True, compile=args.compile, compile_cache_dir=args.compile_cache)
    apply_speed(editor.transformer, fused_compiled, progress=False)
    exact_name = "fused RoPE" + (" + compile" if args.compile else "")
    with torch.inference_mode():
        run(exact_name)
        run(exact_name + " + step cache 0.1", step_cache=0.1)
        run(exact_name + " + context at 0.5", context_scale=0.5)
    if args.fp8:
        uncompile(editor.transformer)
        report = apply_speed(editor.transformer, SpeedOptions(fp8=True, compile=args.compile,
                                                              compile_cache_dir=args.compile_cache), progress=False)
        free(cuda)
        with torch.inference_mode():
            run(f"fp8 ({report.fp8.backend}) + " + exact_name)
    result["rows"] = rows
    print(f"\n{result['device']} | whole edit, {size}² source -> {ctx_w}x{ctx_h} context and output, {steps} steps, "
          f"{dtype}, random weights "
          f"(built in {build_s:.0f} s)")
    print(f"{'variant':42s} {'s/img':>7s} {'text':>6s} {'ctx':>6s} {'denoise':>8s} {'decode':>7s} "
          f"{'reused':>7s} {'MAE px':>7s} {'warm-up':>8s}")
    for r in rows:
        print(f"{r['variant']:42s} {r['s_per_image']:7.2f} {r.get('text_encode_s', 0):6.2f} "
              f"{r.get('context_encode_s', 0):6.2f} {r.get('denoise_s', 0):8.2f} {r.get('decode_s', 0):7.2f} "
              f"{r['step_cache_reused']:>3d}/{r['row_steps']:<3d} {r['pixel_mae_vs_eager']:7.2f} "
              f"{r['warmup_2_steps_s']:7.1f}s")
    editor = None
    free(cuda)
    return result


# -- part 3: the pipeline with one actor -------------------------------------------------------
class RandomEditorFactory:
    """Editor factory for the actor: full-size random modules built on its GPU (no weights on disk)."""

    def __init__(self, tiny: bool) -> None:
        self.tiny = tiny

    def __call__(self, model: str, device: str, dtype, fp8: bool = False, compile: bool = False):
        import torch as _torch

        from kontext_core.speed import SpeedOptions, apply_speed

        editor = random_editor(self.tiny, _torch.device(device if device != "cuda" else "cuda:0"), dtype)
        if fp8 or compile:  # the same options pipeline.actors.load_kontext_editor applies
            apply_speed(editor.transformer, SpeedOptions(fp8=fp8, fused_rope=compile, compile=compile),
                        progress=False)
        return editor


def write_manifest(folder: Path, rows: int, size: int) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, image in enumerate(test_images(rows, size)):
        path = folder / "images" / f"src{i:02d}.png"
        image.save(path)
        records.append({"image": f"images/{path.name}", "instruction": f"recolour the square, variant {i}",
                        "seed": i, "row_id": f"r{i:02d}"})
    manifest = folder / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist(records), manifest)
    return manifest


def part_pipeline(args, env: dict) -> dict:
    from pipeline.reports.ledger import load_ledger
    from pipeline.reports.pricing import resolve_run_pricing
    from pipeline.reports.usage import analyse
    from pipeline.runner import RunConfig, run_batch

    cuda = env["cuda"]
    size = 64 if args.tiny else args.size
    work = Path(tempfile.mkdtemp(prefix="kbench"))
    manifest = write_manifest(work / "m", args.rows, size)
    full = args.pipeline_model == "full-random"  # with --tiny: tiny-random, through the same factory
    config = RunConfig(manifest=str(manifest), out=str(work / "out"),
                       model="tiny-random" if full else args.pipeline_model,
                       device="cuda" if cuda else "cpu", actors=1, batch_size=args.batch_size,
                       steps=args.pipeline_steps, reports=False, progress=False,
                       num_cpus=None if cuda else 2, fp8=args.pipeline_fp8, compile=args.pipeline_compile)
    t0 = time.perf_counter()
    summary = run_batch(config, editor_factory=RandomEditorFactory(args.tiny) if full else None)
    wall = time.perf_counter() - t0
    figures = analyse(load_ledger(summary.run_dir), resolve_run_pricing(summary.run_dir)).figures
    t = figures["time"]
    held, load, busy = t["held_seconds"] or 0.0, t["load_seconds"] or 0.0, t["busy_seconds"] or 0.0
    result = {**env["header"], "rows": args.rows, "size": size, "steps": args.pipeline_steps,
              "batch_size": args.batch_size, "fp8": args.pipeline_fp8, "compile": args.pipeline_compile,
              "model": (f"{'tiny-random' if args.tiny else 'flux.1-kontext-dev'} shapes, random weights built "
                        "in the actor (cache-key fingerprint: tiny-random, nominal)") if full else config.model,
              "status": summary.status, "counts": summary.counts, "wall_s": wall,
              "held_s": held, "load_s": load, "busy_s": busy,
              "busy_fraction_after_load": busy / (held - load) if held > load else None,
              "utilisation_incl_load": t["utilisation"], "busy_by_phase_s": t["busy_by_phase"],
              "cpu_s": t["cpu_seconds"], "cpu_by_phase_s": t["cpu_by_phase"], "run_dir": str(summary.run_dir)}
    frac = result["busy_fraction_after_load"]
    print(f"\n{result['device']} | pipeline: {args.rows} rows, 1 actor ({'GPU' if cuda else 'CPU'}), "
          f"batch {args.batch_size}, {args.pipeline_steps} steps, {size}² | status {summary.status}")
    print(f"{'wall s':>8s} {'held s':>8s} {'load s':>8s} {'busy s':>8s} {'busy/(held-load)':>17s} "
          f"{'busy/held':>9s} {'CPU s':>7s}")
    print(f"{wall:8.1f} {held:8.1f} {load:8.1f} {busy:8.1f} {frac if frac is not None else float('nan'):17.1%} "
          f"{t['utilisation'] or 0:9.1%} {t['cpu_seconds'] or 0:7.1f}")
    print("busy by phase: " + ", ".join(f"{k} {v:.1f} s" for k, v in t["busy_by_phase"].items()))
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=[*PARTS, "all"], default="all")
    ap.add_argument("--size", type=int, default=1024, help="target and context side in pixels")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--tiny", action="store_true", help="tiny configs on the CPU (a check of this script)")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile variants")
    ap.add_argument("--no-fp8", dest="fp8", action="store_false", help="skip the fp8 variants")
    ap.add_argument("--sdpa-variants", action="store_true", help="also force cuDNN / flash SDPA (part 1)")
    ap.add_argument("--compile-cache", default=None, help="on-disk compile cache (default: the user cache dir)")
    ap.add_argument("--edit-steps", type=int, default=28)
    ap.add_argument("--rows", type=int, default=16, help="pipeline rows (part 3)")
    ap.add_argument("--batch-size", type=int, default=4, help="pipeline batch size (part 3)")
    ap.add_argument("--pipeline-steps", type=int, default=8,
                    help="sampling steps per row in part 3 (fewer than 28 to fit a short GPU session; "
                         "the busy fraction at 28 steps can only be higher)")
    ap.add_argument("--pipeline-model", default="full-random",
                    help="'full-random' (full-size random modules built in the actor) or a model spec")
    ap.add_argument("--pipeline-fp8", action="store_true", help="run part 3 with --fp8")
    ap.add_argument("--pipeline-compile", action="store_true",
                    help="run part 3 with --compile (the actor compiles its batch shape on the first batch, "
                         "from $KONTEXT_COMPILE_CACHE when parts 1-2 left it there)")
    ap.add_argument("--out", default="runs/benchmarks/bench_gpu.json",
                    help="where the JSON goes (its folder is created); rewritten after every part")
    args = ap.parse_args(argv)
    if args.tiny:
        args.size, args.reps, args.warmup, args.edit_steps = 64, 2, 1, 4
        args.pipeline_steps = min(args.pipeline_steps, 2)
    if args.tiny:
        torch.set_num_threads(1)  # a CPU check on a shared machine
    env = setup(args)
    parts = PARTS if args.part == "all" else (args.part,)
    results: dict = {}

    def save(part: str, data: dict) -> None:
        results[part] = data
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results if args.part == "all" else data, f, indent=1, default=str)

    for name in parts:
        print(f"== part {name}", flush=True)
        env["save"] = lambda data, name=name: save(name, data)
        save(name, {"transformer": part_transformer, "edit": part_edit, "pipeline": part_pipeline}[name](args, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
