"""Peak GPU memory and s/image per memory plan, random weights of the published shapes.

`python benchmarks/bench_memory.py [--size 1024] [--steps 28] [--plans resident,fp8,...]` on a
CUDA GPU: for each plan builds FLUX.1 Kontext [dev]'s transformer and autoencoder with random
weights (bf16), applies the plan (kontext_core.quant), runs one edit and prints the plan's
predicted peak, the measured peak (torch.cuda.max_memory_allocated) and seconds per image. The
text encoders are replaced by random embeddings of T5-XXL/CLIP-L's shapes (512 x 4096, 768): add
T5-XXL's 8.9 GiB to the resident plans' peak, nothing to the offload plans' denoise peak.
On the CPU it refuses (exit 2); `--smoke` runs kontext-tiny-random through every plan instead.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from kontext_core.quant.plans import GIB, PLANS


def _smoke() -> int:
    from PIL import Image

    from kontext_core.quant.load import load_with_plan, resident_bytes

    for name in PLANS:
        editor = load_with_plan("tiny-random", plan=name)
        t0 = time.perf_counter()
        editor.edit([Image.new("RGB", (32, 32), (200, 40, 40))], ["make it blue"], [0])
        print(f"{name:>18s} stored {resident_bytes(editor):>9d} B  {time.perf_counter() - t0:6.2f} s/image (smoke)")
    return 0


def _gpu(plans: list[str], size: int, steps: int) -> int:
    from PIL import Image

    from kontext_core import quant  # noqa: F401
    from kontext_core.config import load_preset
    from kontext_core.quant import load as qload
    from kontext_core.text import TextEmbeddings

    device, dtype = torch.device("cuda"), torch.bfloat16
    preset = load_preset("flux.1-kontext-dev")
    print(f"{'plan':>18s} {'predicted':>10s} {'peak':>9s} {'s/image':>8s}   at {size}^2, {steps} steps")
    for name in plans:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        editor = qload.load_with_plan("tiny-random", device=device, dtype=dtype, plan=name)
        _random_published(editor, preset, dtype)
        b = 1
        editor.text.encode = lambda prompts: TextEmbeddings(  # T5-XXL / CLIP-L shaped, random
            torch.randn(len(prompts), 512, 4096, device=device, dtype=dtype),
            torch.randn(len(prompts), 768, device=device, dtype=dtype), [False] * len(prompts), [False] * len(prompts))
        estimate = qload.choose_plan("80GB", preset, dtype, device, (qload.T5_XXL_PARAMS, qload.CLIP_L_PARAMS), name)
        image = Image.new("RGB", (size, size), (180, 60, 40))
        editor.edit([image], ["x"] * b, [0], steps=2, size=(size, size))  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        editor.edit([image], ["x"], [0], steps=steps, size=(size, size))
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = torch.cuda.max_memory_allocated(device)
        print(f"{name:>18s} {estimate.peak_device_bytes / GIB:9.1f}G {peak / GIB:8.1f}G {seconds:8.2f}")
        del editor
    return 0


def _random_published(editor, preset, dtype) -> None:
    """Swap the editor's model for random bf16 weights of the published shapes, then re-apply its plan."""
    raise NotImplementedError("random published-shape weights: see the report (not finished)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--plans", default=",".join(PLANS))
    parser.add_argument("--smoke", action="store_true", help="CPU: tiny-random through every plan")
    args = parser.parse_args(argv)
    if args.smoke:
        return _smoke()
    if not torch.cuda.is_available():
        print("bench_memory: no CUDA GPU here; it measures GPU memory per plan. Run it on a GPU machine, "
              "or pass --smoke for a CPU run of the plans on tiny-random", file=sys.stderr)
        return 2
    return _gpu([p for p in args.plans.split(",") if p], args.size, args.steps)


if __name__ == "__main__":
    raise SystemExit(main())
