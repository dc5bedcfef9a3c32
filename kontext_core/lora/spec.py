"""``path[:scale]`` adapter specs (manifest ``lora`` column, job ``sampler.loras``, ``--lora``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import BAD_SCALE, LoraError

DEFAULT_SCALE = 1.0


@dataclass(frozen=True)
class LoraSpec:
    path: str
    scale: float = DEFAULT_SCALE


def check_scale(value: object, path: object) -> float:
    """``value`` as a finite float, else a LoraError naming the adapter."""
    if isinstance(value, bool):
        value = str(value)  # True/False are ints to Python, not scales to a user
    try:
        scale = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        scale = math.nan
        finite = False
    else:
        finite = math.isfinite(scale)
    if not finite:
        raise LoraError(path, f"scale {value!r} is not a finite number",
                        "write the adapter as path[:scale] with a number, e.g. style.safetensors:0.8", BAD_SCALE)
    return scale


def parse_lora_spec(text: str) -> LoraSpec:
    """``"style.safetensors:0.8"`` -> LoraSpec("style.safetensors", 0.8); no suffix: scale 1.

    Only the part after the last ``:`` is a scale, and only when it holds no ``/`` or ``\\``, so
    ``s3://bucket/a.safetensors`` and ``C:\\loras\\a.safetensors`` are paths without a scale.
    """
    text = str(text).strip()
    head, sep, tail = text.rpartition(":")
    if not sep or not head or "/" in tail or "\\" in tail:
        return LoraSpec(text)
    return LoraSpec(head, check_scale(tail.strip(), head))
