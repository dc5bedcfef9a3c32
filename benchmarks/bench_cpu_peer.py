"""kontext_core against diffusers on the CPU, same kontext-tiny weights.

    .venv/bin/python benchmarks/bench_cpu_peer.py                 # 2 threads, 7 repeats
    .venv/bin/python benchmarks/bench_cpu_peer.py --repeats 15 --out runs/benchmarks/cpu_peer.json

diffusers' copy is built with our own conversion tables (kontext_core.checkpoint: to_diffusers on
our state dicts into FluxTransformer2DModel and AutoencoderKL); FluxKontextPipeline shares our text
encoder modules and gets the matching scheduler, so both sides compute the same edit.

Cases, each at batch 1 and 8, timed interleaved (ours and diffusers alternate within every repeat,
the order flipping each repeat, so load on a shared machine hits both alike):
- transformer: one forward pass at kontext-tiny's shape (64 target + 64 context + 24 text tokens
  per row). Ours gets its RoPE table precomputed, as a whole edit does once per call; diffusers
  computes it in every forward, as its pipeline does.
- edit/distinct: a whole edit (text encode, context encode, all steps, decode, PIL out) of B rows
  with B distinct images and B distinct instructions: nothing for our reuse to share.
- edit/catalog: the same with B = products x variants as a manifest batches them (8 = 2 products x
  4 variants): rows share images and instructions, which our editor encodes once.
Printed per case: min and median milliseconds of each, and speed-up = diffusers / ours (above 1:
ours is faster), of the minima and of the medians. Agreement: the transformer's relative
difference, and per edit the share of equal uint8 pixel values and the largest difference.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from kontext_core import KontextEditor
from kontext_core.checkpoint import (
    autoencoder_rules,
    diffusers_transformer_config,
    diffusers_vae_config,
    to_diffusers,
    transformer_rules,
)
from kontext_core.sampling import image_ids

COLOURS = ("red", "blue", "green", "grey", "white", "pink", "black", "orange")


def diffusers_pipeline(editor: KontextEditor) -> Any:
    """FluxKontextPipeline holding the editor's weights (our tables) and its text modules."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxKontextPipeline,
        FluxTransformer2DModel,
    )

    tf_cfg, ae_cfg, s = editor.preset.transformer, editor.preset.autoencoder, editor.preset.sampler
    transformer = FluxTransformer2DModel(**diffusers_transformer_config(tf_cfg))
    transformer.load_state_dict(to_diffusers(editor.transformer.state_dict(), transformer_rules(tf_cfg)), strict=True)
    vae = AutoencoderKL(**diffusers_vae_config(ae_cfg))
    vae.load_state_dict(to_diffusers(editor.autoencoder.state_dict(), autoencoder_rules(ae_cfg)), strict=True)
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=s.base_shift,
                                                max_shift=s.max_shift, base_image_seq_len=s.base_seq_len,
                                                max_image_seq_len=s.max_seq_len)
    text = editor.text
    pipe = FluxKontextPipeline(scheduler=scheduler, vae=vae.eval(), text_encoder=text.clip,
                               tokenizer=text.clip_tokenizer, text_encoder_2=text.t5,
                               tokenizer_2=text.t5_tokenizer, transformer=transformer.eval())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def product_images(n: int, size: tuple[int, int]) -> list[Image.Image]:
    """n distinct product-like scenes: a coloured square on a plain background."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        w, h = size
        arr = np.empty((h, w, 3), dtype=np.uint8)
        arr[:] = rng.integers(0, 256, 3)
        arr[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = rng.integers(0, 256, 3)
        out.append(Image.fromarray(arr))
    return out


def edit_rows(layout: str, batch: int, size: tuple[int, int]) -> tuple[list[Image.Image], list[str], list[int]]:
    """(images, instructions, seeds) of one batch; catalog: products x up to 4 variants."""
    if layout == "distinct":
        images = product_images(batch, size)
        return images, [f"make the background {COLOURS[i % len(COLOURS)]}" for i in range(batch)], list(range(batch))
    variants = min(batch, 4)
    products = product_images(math.ceil(batch / variants), size)
    rows = [(products[i // variants], f"make the background {COLOURS[i % variants]}") for i in range(batch)]
    return [r[0] for r in rows], [r[1] for r in rows], list(range(batch))


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each fn, alternating fns within each repeat (order flipped each repeat)."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else reversed(names):
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def summarise(times: dict[str, list[float]]) -> dict[str, float]:
    ours, ref = times["ours"], times["diffusers"]
    return {"ours_min_ms": 1e3 * min(ours), "ours_median_ms": 1e3 * statistics.median(ours),
            "diffusers_min_ms": 1e3 * min(ref), "diffusers_median_ms": 1e3 * statistics.median(ref),
            "speedup_min": min(ref) / min(ours), "speedup_median": statistics.median(ref) / statistics.median(ours)}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def transformer_case(editor: KontextEditor, pipe: Any, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    cfg = editor.preset.transformer
    w, h = editor.preset.resolution.size
    ppt = editor.pixels_per_token
    rows, cols = h // ppt, w // ppt
    n_txt = editor.preset.text.t5_max_length
    gen = torch.Generator().manual_seed(batch)
    img = torch.randn(batch, 2 * rows * cols, cfg.in_channels, generator=gen)
    txt = torch.randn(batch, n_txt, cfg.context_in_dim, generator=gen)
    y = torch.randn(batch, cfg.vec_in_dim, generator=gen)
    ids = torch.cat((image_ids(rows, cols, 0.0), image_ids(rows, cols, 1.0)), dim=1)
    txt_ids = torch.zeros(1, n_txt, 3)
    t, g = torch.full((batch,), 0.7), torch.full((batch,), editor.preset.sampler.guidance)
    ours_model, ref_model = editor.transformer, pipe.transformer
    pe = ours_model.rope(torch.cat((txt_ids, ids), dim=1))

    def ours() -> torch.Tensor:
        return ours_model(img=img, img_ids=ids, txt=txt, txt_ids=txt_ids, timesteps=t, y=y, guidance=g, pe=pe)

    def diffusers() -> torch.Tensor:
        return ref_model(hidden_states=img, encoder_hidden_states=txt, pooled_projections=y, timestep=t,
                         img_ids=ids[0], txt_ids=txt_ids[0], guidance=g, return_dict=False)[0]

    with torch.inference_mode():
        agreement = {"rel_diff": rel(ours(), diffusers())}
        times = interleaved({"ours": ours, "diffusers": diffusers}, args.repeats, args.warmup)
    return {"case": "transformer", "batch": batch, **summarise(times), **agreement}


def edit_case(editor: KontextEditor, pipe: Any, layout: str, batch: int, args: argparse.Namespace) -> dict[str, Any]:
    w, h = editor.preset.resolution.size
    images, instructions, seeds = edit_rows(layout, batch, (w, h))
    steps = args.steps or editor.preset.sampler.steps
    guidance = editor.preset.sampler.guidance

    def ours() -> list[Image.Image]:
        return editor.edit(images, instructions, seeds, steps=steps, guidance=guidance).images

    def diffusers() -> list[Image.Image]:
        return pipe(image=images, prompt=instructions, height=h, width=w, max_area=h * w, _auto_resize=False,
                    guidance_scale=guidance, num_inference_steps=steps,
                    max_sequence_length=editor.preset.text.t5_max_length,
                    generator=[torch.Generator("cpu").manual_seed(s) for s in seeds]).images

    with torch.inference_mode():
        a = np.stack([np.asarray(im, dtype=np.int16) for im in ours()])
        b = np.stack([np.asarray(im, dtype=np.int16) for im in diffusers()])
        times = interleaved({"ours": ours, "diffusers": diffusers}, args.repeats, args.warmup)
    agreement = {"pixels_equal": float((a == b).mean()), "max_pixel_diff": int(np.abs(a - b).max())}
    return {"case": f"edit/{layout}", "batch": batch, "steps": steps, **summarise(times), **agreement}


def agreement_text(r: dict[str, Any]) -> str:
    if "rel_diff" in r:
        return f"rel diff {r['rel_diff']:.2e}"
    return f"pixels equal {100 * r['pixels_equal']:.2f}%, max |diff| {r['max_pixel_diff']}"


def print_table(results: list[dict[str, Any]], header: dict[str, Any]) -> None:
    print(f"\n{header['date']} | {header['machine']} | torch {header['torch']} | diffusers {header['diffusers']} | "
          f"{header['threads']} threads | {header['repeats']} repeats, interleaved")
    print(f"{'case':16s} {'batch':>5s} {'ours min':>9s} {'ours med':>9s} {'diff min':>9s} {'diff med':>9s} "
          f"{'x min':>6s} {'x med':>6s}  agreement")
    for r in results:
        print(f"{r['case']:16s} {r['batch']:5d} {r['ours_min_ms']:9.1f} {r['ours_median_ms']:9.1f} "
              f"{r['diffusers_min_ms']:9.1f} {r['diffusers_median_ms']:9.1f} {r['speedup_min']:6.2f} "
              f"{r['speedup_median']:6.2f}  {agreement_text(r)}")
    print("times in ms; x = diffusers / ours (above 1: kontext_core is faster)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="kontext-tiny")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (both sides)")
    ap.add_argument("--repeats", type=int, default=7, help="timed calls of each side per case")
    ap.add_argument("--warmup", type=int, default=1, help="untimed calls of each side per case")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--steps", type=int, default=None, help="sampling steps of the edits (default: the preset's)")
    ap.add_argument("--cases", nargs="+", default=["transformer", "distinct", "catalog"],
                    choices=["transformer", "distinct", "catalog"])
    ap.add_argument("--out", default=None, help="also write the figures as JSON here")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    torch.set_num_threads(args.threads)
    import diffusers

    editor = KontextEditor.load(args.model)
    pipe = diffusers_pipeline(editor)
    header = {"date": date.today().isoformat(), "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "diffusers": diffusers.__version__, "threads": args.threads,
              "repeats": args.repeats, "model": editor.preset.name}
    results = []
    for case in args.cases:
        for batch in args.batches:
            r = (transformer_case(editor, pipe, batch, args) if case == "transformer"
                 else edit_case(editor, pipe, case, batch, args))
            print(f"  {r['case']} b{batch}: x{r['speedup_median']:.2f} (median), {agreement_text(r)}", flush=True)
            results.append(r)
    print_table(results, header)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({**header, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
