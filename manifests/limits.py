"""The one table of sampler and output limits.

Manifest rows (manifests.rules), CLI flags (pipeline.runner.check_flags), job specs
(jobs.spec), the output encoders (pipeline.encode, pipeline.provenance) and the model
loader (pipeline.model_info) all read these values here, so a limit changes in one place.
It lives in ``manifests`` because that is the lowest layer every one of them may import.
"""

from __future__ import annotations

from collections.abc import Mapping

MIN_STEPS, MAX_STEPS = 1, 200
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0
# first-block step caching threshold (relative change of the first block's output)
MIN_STEP_CACHE, MAX_STEP_CACHE = 0.0, 1.0

OUTPUT_FORMATS = ("png", "jpeg", "webp")  # canonical names: the cache key spells these
FORMAT_ALIASES: Mapping[str, str] = {"jpg": "jpeg"}

DTYPES = ("float32", "bfloat16")  # no float16: FLUX activations overflow it
DEVICES = ("auto", "cpu", "cuda")


def format_name(value: str) -> str | None:
    """The canonical output format for ``value`` ('JPG ' -> 'jpeg'), or None if unknown."""
    name = value.strip().lower()
    name = FORMAT_ALIASES.get(name, name)
    return name if name in OUTPUT_FORMATS else None


def steps_in_range(steps: int) -> bool:
    return MIN_STEPS <= steps <= MAX_STEPS


def guidance_in_range(guidance: float) -> bool:
    return MIN_GUIDANCE <= guidance <= MAX_GUIDANCE


def step_cache_in_range(threshold: float) -> bool:
    return MIN_STEP_CACHE <= threshold <= MAX_STEP_CACHE


def range_text(low: float, high: float) -> str:
    """'between 1 and 200', 'between 0 and 20': how every message states a range."""
    return f"between {low:g} and {high:g}"
