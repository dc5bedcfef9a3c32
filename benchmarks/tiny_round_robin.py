"""Shared by the CPU fast-path benchmarks on kontext-tiny (bench_step_cache, bench_context_scale)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from kontext_core import KontextEditor
from kontext_core.tiny.metrics import TinyMetrics, evaluate, held_out_examples


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


def time_option_from_args(description: str, option: str, flag: str, default: str,
                          argv: list[str] | None) -> tuple[list[float | None], dict, dict[float | None, TinyMetrics]]:
    """A benchmark's command line (--model, --n, ``flag`` with comma-separated values, --repeats),
    then ``round_robin`` over the exact path and those values. Returns (values with None first,
    best times, metrics)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--model", default="kontext-tiny")
    ap.add_argument("--n", type=int, default=64, help="held-out scenes")
    ap.add_argument(flag, default=default, help=f"comma-separated {option} values to compare with exact")
    ap.add_argument("--repeats", type=int, default=3, help="round-robin rounds (best time of each)")
    args = ap.parse_args(argv)
    editor = KontextEditor.load(args.model)
    examples = held_out_examples(args.n, editor.preset.resolution.size[0])
    values = [None] + [float(v) for v in getattr(args, flag.lstrip("-").replace("-", "_")).split(",")]
    best, metrics = round_robin(editor, examples, option, values, args.repeats)
    return values, best, metrics
