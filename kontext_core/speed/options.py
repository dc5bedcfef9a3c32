"""Speed options of a loaded model, and applying them to a transformer.

Exact path (same pixels up to floating-point rounding; never part of the cache key): fused RoPE,
torch.compile. Fast path (approximations, part of the cache key): fp8 linears. Step caching is a
per-edit option (``KontextEditor.edit(step_cache=...)``), not a load option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .compile import ShapeBucket, compile_blocks, warm_up
from .fp8 import Fp8Report, swap_fp8_linears


@dataclass(frozen=True)
class SpeedOptions:
    fused_rope: bool = False  # exact path: RoPE as one elementwise expression in the compute dtype
    compile: bool = False  # exact path: torch.compile each block (static shapes, on-disk cache)
    compile_cache_dir: str | None = None  # None: $KONTEXT_COMPILE_CACHE or the user cache dir
    warm_up: Sequence[ShapeBucket] = ()  # shapes to compile at load (e.g. compile.preferred_buckets())
    fp8: bool = False  # fast path (approximation): fp8 row-wise block linears


@dataclass
class SpeedReport:
    rope_mode: str = "exact"
    fp8: Fp8Report | None = None
    compile_cache_dir: Path | None = None
    buckets_warmed: int = 0


def apply_speed(transformer, options: SpeedOptions, progress: bool = True) -> SpeedReport:
    """Apply ``options`` to a KontextTransformer in place: fp8 first, then RoPE mode, then compile."""
    report = SpeedReport()
    if options.fp8:
        report.fp8 = swap_fp8_linears(transformer)
    if options.fused_rope:
        transformer.rope_mode = "fused"
    report.rope_mode = transformer.rope_mode
    if options.compile:
        report.compile_cache_dir = compile_blocks(transformer, options.compile_cache_dir)
        if options.warm_up:
            report.buckets_warmed = warm_up(transformer, options.warm_up, progress=progress)
    return report
