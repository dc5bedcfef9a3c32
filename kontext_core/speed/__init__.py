"""Speed paths for the transformer: fused RoPE and torch.compile (exact path), fp8
row-wise linears (fast path, an approximation). See docs/performance.md for what is measured."""

from .compile import (
    ShapeBucket,
    compile_blocks,
    default_cache_dir,
    preferred_buckets,
    use_cache_dir,
    warm_up,
)
from .fp8 import (
    Fp8Linear,
    Fp8Report,
    Fp8UnsupportedError,
    quantize_rows,
    scaled_mm_available,
    swap_fp8_linears,
)
from .fused_rope import FusedRope, apply_rope_fused, fused_tables
from .options import SpeedOptions, SpeedReport, apply_speed

__all__ = [
    "Fp8Linear",
    "Fp8Report",
    "Fp8UnsupportedError",
    "FusedRope",
    "ShapeBucket",
    "SpeedOptions",
    "SpeedReport",
    "apply_rope_fused",
    "apply_speed",
    "compile_blocks",
    "default_cache_dir",
    "fused_tables",
    "preferred_buckets",
    "quantize_rows",
    "scaled_mm_available",
    "swap_fp8_linears",
    "use_cache_dir",
    "warm_up",
]
