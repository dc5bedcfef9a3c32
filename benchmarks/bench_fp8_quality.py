"""Edit quality of the speed paths on kontext-tiny (CPU is fine): exact vs fused RoPE vs fp8.

`python benchmarks/bench_fp8_quality.py [--n 64] [--out runs/benchmarks/fp8_quality.json]` evaluates kontext-tiny's
held-out edit metrics (kontext_core.tiny.metrics) with the exact path, with fused RoPE (exact
path: should match to rounding) and with fp8 row-wise linears (fast path: an approximation; on a
CPU the fp8 matmuls are emulated, with the same quantization as the GPU kernel up to accumulation
order). Quality only: emulated fp8 on a CPU is slower than exact, so no speed is reported.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from kontext_core import KontextEditor
from kontext_core.speed import SpeedOptions
from kontext_core.tiny.metrics import evaluate, held_out_examples


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="kontext-tiny")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/benchmarks/fp8_quality.json",
                    help="where the JSON goes (its folder is created)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = {"exact": SpeedOptions(), "fused RoPE": SpeedOptions(fused_rope=True),
                "fp8 row-wise": SpeedOptions(fp8=True)}
    rows = []
    examples = None
    for name, speed in variants.items():
        editor = KontextEditor.load(args.model, speed=speed)
        if examples is None:
            examples = held_out_examples(args.n, editor.preset.resolution.size[0])
        m = evaluate(editor, examples=examples, progress=False)
        rows.append({"variant": name, "background_improvement": m.background_improvement,
                     "product_psnr_db": m.background_product_psnr, "recolour_improvement": m.recolour_improvement,
                     "fp8_layers": editor.speed_report.fp8.swapped if editor.speed_report.fp8 else 0})
    base = rows[0]
    print(f"\n{args.model}: {args.n} held-out scenes, default steps (CPU; fp8 emulated)")
    print(f"{'variant':14s} {'bg ×':>7s} {'product PSNR':>13s} {'recolour ×':>11s}  vs exact (bg, recolour)")
    for r in rows:
        bg = r["background_improvement"] / base["background_improvement"] - 1
        rc = r["recolour_improvement"] / base["recolour_improvement"] - 1
        r["vs_exact"] = {"background": bg, "recolour": rc,
                         "psnr_db": r["product_psnr_db"] - base["product_psnr_db"]}
        print(f"{r['variant']:14s} {r['background_improvement']:7.2f} {r['product_psnr_db']:10.2f} dB "
              f"{r['recolour_improvement']:11.2f}  {bg:+.1%}, {rc:+.1%}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"model": args.model, "n": args.n, "rows": rows}, f, indent=1,
                  default=lambda o: float(o) if isinstance(o, np.floating) else str(o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
