"""What made kontext-tiny's CPU training ~2x faster, measured in one process.

`python benchmarks/bench_train_step.py [--batch 32] [--repeats 5]` times, on the shipped
kontext-tiny and one training batch: encoding the batch's 2×batch images in float32 vs under bf16
autocast (what train.py does now), and one transformer forward + backward eager vs with every
block compiled and attention on the MATH backend (train.py's
``compile_transformer`` and ``compiled_attention``). Prints mean times and the ratios against the
baseline measured in the same run, and the bf16 latents' rms difference from float32.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from kontext_core import KontextEditor
from kontext_core.sampling import image_ids, pack
from kontext_core.synthetic import sample_batch
from kontext_core.tiny.recipe import IMAGE_SIZE
from kontext_core.tiny.train import (
    GUIDANCE,
    TextCache,
    _to_pixels,
    compile_transformer,
    compiled_attention,
    sample_t,
)


def mean_time(fn, repeats: int) -> float:
    fn()  # warm-up (and, for the compiled step, the compile itself)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32, help="edit pairs per training step (train.py's default)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    cpu = torch.device("cpu")
    editor = KontextEditor.load("kontext-tiny")
    tf, ae = editor.transformer.train(), editor.autoencoder
    examples = sample_batch(123, args.batch, size=IMAGE_SIZE, split="train")
    pixels = _to_pixels(torch.from_numpy(np.stack([e.source for e in examples] + [e.target for e in examples])), cpu)

    def encode(bf16: bool) -> torch.Tensor:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return ae.encode(pixels).float()

    enc32, enc16 = mean_time(lambda: encode(False), args.repeats), mean_time(lambda: encode(True), args.repeats)
    z32, z16 = encode(False), encode(True)
    rms = float((z16 - z32).pow(2).mean().sqrt() / z32.pow(2).mean().sqrt())

    ctx, x0 = pack(z32[: args.batch]), pack(z32[args.batch :])
    txt, y = TextCache(editor.text)([e.instruction for e in examples])
    grid = IMAGE_SIZE // editor.pixels_per_token
    ids = torch.cat((image_ids(grid, grid, 0.0), image_ids(grid, grid, 1.0)), dim=1)
    txt_ids = torch.zeros(1, txt.shape[1], 3)
    pe = tf.rope(torch.cat((txt_ids, ids), dim=1))
    gen = torch.Generator().manual_seed(0)

    def step(attention=contextlib.nullcontext) -> None:
        t = sample_t(args.batch, x0.shape[1], gen, cpu)
        eps = torch.randn(x0.shape, generator=gen)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        with torch.autocast("cpu", dtype=torch.bfloat16), attention():
            pred = tf(img=torch.cat((xt, ctx), dim=1), img_ids=ids, txt=txt, txt_ids=txt_ids, timesteps=t, y=y,
                      guidance=torch.full((args.batch,), GUIDANCE), pe=pe)[:, : x0.shape[1]]
        (pred.float() - (eps - x0)).pow(2).mean().backward()
        tf.zero_grad(set_to_none=True)

    eager = mean_time(step, args.repeats)
    compile_transformer(tf)
    t0 = time.perf_counter()
    step(compiled_attention)
    compile_s = time.perf_counter() - t0
    compiled = mean_time(lambda: step(compiled_attention), args.repeats)

    print(f"kontext-tiny training step pieces, batch {args.batch}, {torch.get_num_threads()} threads, "
          f"mean of {args.repeats}")
    print(f"encode {2 * args.batch} images: float32 {enc32:.3f} s, bf16 autocast {enc16:.3f} s "
          f"-> {enc32 / enc16:.2f}x (latents' rms difference {rms:.2%})")
    print(f"transformer forward+backward: eager {eager:.3f} s, compiled blocks {compiled:.3f} s "
          f"-> {eager / compiled:.2f}x (first compiled step, compiling included: {compile_s:.1f} s)")
    print(f"encode + step: {enc32 + eager:.3f} s -> {enc16 + compiled:.3f} s "
          f"({(enc32 + eager) / (enc16 + compiled):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
