""""What changed" heat maps and automatic review flags for one output against its source.

Both images are compared at a small analysis size (the output fitted into `analysis_size`, the
source resized to exactly that size), which is plenty to see where an edit landed and keeps a
500-row run fast. Differences are |output - source| averaged over RGB, in 0..1.

Flags (thresholds in `ReviewThresholds`, overridable from the CLI or config.json "review"):

* ``unchanged``: mean difference < `unchanged_mean_diff` (the edit did not happen).
* ``spread``: the fraction of pixels whose difference > `changed_pixel` is above
  `spread_fraction` (the change covers nearly the whole frame: the product itself was
  re-rendered or drifted). The default, 0.92, leaves catalog edits alone: a new background or a
  re-staged scene changes most of the frame but keeps the product (typically 15-30 % of it).
* ``blank``: the output's pixel standard deviation < `blank_std` (a flat, black or white image,
  e.g. NaNs decoded to black).
* ``reframed``: output aspect ratio differs from the source's by more than `aspect_tolerance`
  (the product may be cropped or squashed).
* Set by the builder, not here: ``failed``, ``missing-output``, ``no-source`` (no comparison
  possible), ``no-provenance`` (the file carries no embedded parameters) and
  ``provenance-mismatch`` (the embedded instruction or seed differ from the row's).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from PIL import Image

QUALITY_FLAGS = ("unchanged", "spread", "blank", "reframed", "missing-output", "no-source",
                 "no-provenance", "provenance-mismatch")


@dataclass(frozen=True)
class ReviewThresholds:
    unchanged_mean_diff: float = 0.015
    changed_pixel: float = 0.10
    spread_fraction: float = 0.92  # above this changed fraction, the product changed too
    blank_std: float = 0.01
    aspect_tolerance: float = 0.10
    heat_full_scale: float = 0.5  # a difference this large shows as the hottest colour
    analysis_size: int = 256


def thresholds_from_mapping(values: Mapping[str, Any] | None, base: ReviewThresholds | None = None) -> ReviewThresholds:
    """Override defaults from a mapping (config.json "review" or CLI); unknown names are errors."""
    base = base or ReviewThresholds()
    if not values:
        return base
    known = {f.name: f.type for f in fields(ReviewThresholds)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown review threshold(s) {', '.join(unknown)}; known: {', '.join(known)}")
    updates: dict[str, Any] = {}
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"review threshold {name} must be a number >= 0, got {value!r}")
        updates[name] = int(value) if name == "analysis_size" else float(value)
    merged = {f.name: getattr(base, f.name) for f in fields(ReviewThresholds)} | updates
    if merged["analysis_size"] < 8:
        raise ValueError(f"review threshold analysis_size must be >= 8 pixels, got {merged['analysis_size']}")
    return ReviewThresholds(**merged)


# Dark blue -> purple -> red -> orange -> pale yellow: reads as "cold = unchanged, hot = changed".
_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_COLOURS = np.array([[10, 8, 40], [90, 20, 120], [190, 40, 70], [245, 130, 30], [252, 240, 170]], dtype=np.float64)
COLOUR_LUT = np.stack([np.interp(np.linspace(0, 1, 256), _STOPS, _COLOURS[:, c]) for c in range(3)], axis=1).astype(np.uint8)


def colourise(values: np.ndarray, full_scale: float) -> Image.Image:
    """Map a 2-D array of differences (0..1) to a heat map: a palette ("P") image whose palette is
    COLOUR_LUT (a third of the bytes of RGB, so it saves fast and small); .convert("RGB") for pixels."""
    scaled = np.clip(values / max(full_scale, 1e-6), 0.0, 1.0)
    heat = Image.fromarray((scaled * 255).astype(np.uint8), "L").convert("P")
    heat.putpalette(COLOUR_LUT.reshape(-1).tolist())
    return heat


@dataclass(frozen=True)
class ChangeResult:
    mean_diff: float
    changed_fraction: float
    output_std: float
    heat: Image.Image
    flags: tuple[str, ...]


def compare_to_source(source: Image.Image, output: Image.Image, thresholds: ReviewThresholds, *,
                      source_size: tuple[int, int] | None = None,
                      output_size: tuple[int, int] | None = None) -> ChangeResult:
    """Heat map and flags of `output` against `source` (any sizes; compared at analysis size).

    Callers that pass thumbnails give the original sizes for the aspect-ratio check."""
    size = thresholds.analysis_size
    out_small = output.convert("RGB")
    scale = min(size / out_small.width, size / out_small.height, 1.0)
    target = (max(1, round(out_small.width * scale)), max(1, round(out_small.height * scale)))
    if out_small.size != target:
        out_small = out_small.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    src_small = source.convert("RGB").resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)
    out_arr = np.asarray(out_small, dtype=np.float32) / 255.0
    src_arr = np.asarray(src_small, dtype=np.float32) / 255.0
    diff = np.abs(out_arr - src_arr).mean(axis=2)
    mean_diff = float(diff.mean())
    changed_fraction = float((diff > thresholds.changed_pixel).mean())
    output_std = float(out_arr.std())
    flags = []
    if mean_diff < thresholds.unchanged_mean_diff:
        flags.append("unchanged")
    if changed_fraction > thresholds.spread_fraction:
        flags.append("spread")
    if output_std < thresholds.blank_std:
        flags.append("blank")
    src_w, src_h = source_size or source.size
    out_w, out_h = output_size or output.size
    src_aspect, out_aspect = src_w / src_h, out_w / out_h
    if abs(out_aspect / src_aspect - 1.0) > thresholds.aspect_tolerance:
        flags.append("reframed")
    return ChangeResult(mean_diff, changed_fraction, output_std, colourise(diff, thresholds.heat_full_scale), tuple(flags))
