"""Fast path on CPU: first-block step caching on kontext-tiny — speed vs quality against exact.

`python benchmarks/bench_step_cache.py [--n 64]` prints, per threshold, the share of row-steps
that reused cached blocks, wall time relative to the exact run measured in the same process, and
the held-out edit metrics (kontext_core.tiny.metrics) next to the exact path's.
"""

from __future__ import annotations

from tiny_round_robin import time_option_from_args


def main(argv: list[str] | None = None) -> int:
    configs, best, metrics = time_option_from_args(__doc__, "step_cache", "--thresholds", "0.05,0.1,0.2,0.3", argv)
    rows = [(thr, best[thr], metrics[thr]) for thr in configs]
    base_t, base = rows[0][1], rows[0][2]
    print(f"{'threshold':>9s} {'time':>7s} {'speed':>6s} {'bg x':>6s} {'psnr':>6s} {'recol x':>7s} {'reused':>6s}  vs exact (bg, recolour)")
    for thr, t, m in rows:
        name = "exact" if thr is None else f"{thr:g}"
        print(f"{name:>9s} {t:6.1f}s {base_t / t:5.2f}x {m.background_improvement:6.1f} {m.background_product_psnr:6.2f} "
              f"{m.recolour_improvement:7.2f} {m.step_cache_reuse:6.0%}  {m.background_improvement / base.background_improvement - 1:+.1%}, "
              f"{m.recolour_improvement / base.recolour_improvement - 1:+.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
