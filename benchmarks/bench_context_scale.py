"""Fast path on CPU: a reduced context (``context_scale``) on kontext-tiny — speed vs quality.

`python benchmarks/bench_context_scale.py [--n 64]` prints, per scale, wall time relative to the
exact run measured in the same process (best of ``--repeats``, round-robin) and the held-out edit
metrics (kontext_core.tiny.metrics) next to the exact path's. The full-size speed is part 2 of
bench_gpu.py.
"""

from __future__ import annotations

from tiny_round_robin import time_option_from_args


def main(argv: list[str] | None = None) -> int:
    configs, best, metrics = time_option_from_args(__doc__, "context_scale", "--scales", "0.75,0.5", argv)
    base_t, base = best[None], metrics[None]
    print(f"{'scale':>6s} {'time':>7s} {'speed':>6s} {'bg x':>6s} {'psnr':>6s} {'recol x':>7s}  vs exact (bg, psnr, recolour)")
    for scale in configs:
        m, t = metrics[scale], best[scale]
        print(f"{'exact' if scale is None else f'{scale:g}':>6s} {t:6.1f}s {base_t / t:5.2f}x "
              f"{m.background_improvement:6.1f} {m.background_product_psnr:6.2f} {m.recolour_improvement:7.2f}  "
              f"{m.background_improvement / base.background_improvement - 1:+.1%}, "
              f"{m.background_product_psnr - base.background_product_psnr:+.1f} dB, "
              f"{m.recolour_improvement / base.recolour_improvement - 1:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
