"""Shared by the CPU fast-path benchmarks on kontext-tiny (bench_step_cache, bench_context_scale)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from kontext_core import KontextEditor
from kontext_core.tiny.metrics import TinyMetrics, evaluate


def round_robin(editor: KontextEditor, examples: Sequence, option: str, values: Sequence[float | None],
                repeats: int) -> tuple[dict, dict[float | None, TinyMetrics]]:
    """Held-out metrics and best wall time for each value of the edit option ``option``
    (None: the exact path). Values take turns, ``repeats`` rounds, best time of each: a shared
    machine's noise hits every variant alike."""
    best: dict = {}
    metrics: dict = {}
    for _ in range(repeats):
        for value in values:
            t0 = time.perf_counter()
            metrics[value] = evaluate(editor, examples=examples, progress=False, **{option: value})
            best[value] = min(best.get(value, float("inf")), time.perf_counter() - t0)
    return best, metrics
