"""Timing of batch generation (printed, never asserted)."""

from __future__ import annotations

import time

from .sampling import sample_batch


def benchmark(n: int = 64, size: int = 64, repeats: int = 5) -> float:
    """Print and return the best wall time (s) of sample_batch(n, size) over `repeats` runs."""
    sample_batch(0, 2, size)  # warm caches (backgrounds, imports)
    times = []
    for repeat in range(repeats):
        start = time.perf_counter()
        sample_batch(10_000 + repeat, n, size)
        times.append(time.perf_counter() - start)
    best = min(times)
    print(f"sample_batch n={n} size={size}: best {best * 1000:.1f} ms, "
          f"mean {sum(times) / len(times) * 1000:.1f} ms over {repeats} runs "
          f"({best / n * 1e6:.0f} us per example)")
    return best
