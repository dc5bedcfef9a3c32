"""Kontext's preferred resolutions and the size rules built on them (as BFL's and diffusers' Kontext pipelines apply them)."""

from __future__ import annotations

from .config import ResolutionPolicy

_PORTRAIT = [(672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184), (944, 1104)]
# (width, height), all multiples of 16; identical in BFL and diffusers.
PREFERRED_KONTEXT_RESOLUTIONS: list[tuple[int, int]] = [*_PORTRAIT, (1024, 1024), *[(h, w) for w, h in reversed(_PORTRAIT)]]


def nearest_preferred(width: int, height: int) -> tuple[int, int]:
    """Preferred (w, h) closest in aspect to width/height; ties go to the smaller w, then h (BFL)."""
    aspect = width / height
    _, w, h = min((abs(aspect - w / h), w, h) for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
    return w, h


def context_size(policy: ResolutionPolicy, width: int, height: int, multiple: int) -> tuple[int, int]:
    """Size (w, h) the context image is resized to before encoding."""
    if policy.kind == "kontext":
        w, h = nearest_preferred(width, height)
    elif policy.kind == "fixed":
        if policy.size is None:
            raise ValueError("resolution policy 'fixed' needs a size")
        w, h = policy.size
    else:
        raise ValueError(f"unknown resolution policy {policy.kind!r}; use 'kontext' or 'fixed'")
    return w // multiple * multiple, h // multiple * multiple


def check_output_size(size: tuple[int, int], multiple: int) -> tuple[int, int]:
    w, h = size
    if w <= 0 or h <= 0 or w % multiple or h % multiple:
        raise ValueError(f"output size {w}x{h} must be positive multiples of {multiple} pixels")
    return w, h


def check_context_scale(scale: float | None) -> float:
    """The reduced-context fraction (None means 1: the exact path); must be in (0, 1]."""
    if scale is None:
        return 1.0
    scale = float(scale)
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"context scale must be in (0, 1] (got {scale}); 0.5 encodes the source at half "
                         "its width and height, 1 is the exact path")
    return scale


def reduced_context_size(size: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """(w, h) times ``scale``, rounded to the nearest multiple (at least one multiple)."""
    if scale == 1.0:
        return size
    return tuple(max(multiple, round(v * scale / multiple) * multiple) for v in size)  # type: ignore[return-value]
