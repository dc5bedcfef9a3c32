"""Warn at validation about sources whose shape the model will squash.

A model resizes each source to the context size its preset's resolution policy gives (a small
model's native size, e.g. 64x64 for kontext-tiny; the full model snaps to Kontext's preferred
sizes), and the output is that size unless the row sets width/height. A 720x477 photo into
kontext-tiny comes out 64x64: the product is squashed by a third, and the review page flags the
row ``reframed`` after the money is spent. ``size_warnings`` says so before the run, one line
per source image, with the fix.

Only the image headers are read (no decoding); remote sources and unreadable files are left to
the run, which reports them as row failures.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from math import gcd
from typing import Any

from PIL import Image

from pipeline.reports.changes import ReviewThresholds

# The review page's `reframed` flag uses this tolerance: warn about exactly the rows it flags.
ASPECT_TOLERANCE = ReviewThresholds().aspect_tolerance
MAX_LISTED = 20  # warning lines listed; the rest are counted
_EXIF_ORIENTATION = 0x0112
_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations the decoder turns by 90 degrees


@dataclass
class _Source:
    """One source image and the output shape its rows get."""

    image: str
    size: tuple[int, int]
    out: tuple[int, int]
    rows: list[tuple[int, str]] = field(default_factory=list)  # (row index, row id)


def size_warnings(rows: Iterable[Any], preset: Any, tolerance: float = ASPECT_TOLERANCE,
                  limit: int = MAX_LISTED) -> list[str]:
    """One warning per (source image, output size) whose aspect differs from the source's by
    more than ``tolerance``, then one line counting those not listed.

    ``rows``: manifest rows (``manifests.ManifestRow``: ``row_id``, ``image`` as a resolved
    local path or URI, ``width``, ``height``). ``preset``: the model's kontext_core Preset."""
    squashed = [s for s in _sources(rows, preset) if _distortion(s.size, s.out) > tolerance]
    lines = [_warning(s, preset) for s in squashed[:limit]]
    if len(squashed) > limit:
        lines.append(f"... and {len(squashed) - limit} more source image(s) whose shape "
                     f"{preset.name} changes (not listed)")
    return lines


def manifest_size_warnings(checked: Any, model: str) -> list[str]:
    """``size_warnings`` for a checked manifest (pipeline.manifest_input.CheckedManifest) and
    a model spec (preset name or weights folder); rows with problems are left out."""
    import kontext_core
    from pipeline.manifest_input import BadRow, iter_manifest

    preset = kontext_core.resolve_model(model).preset
    rows = (row for batch in iter_manifest(checked) for row in batch
            if not isinstance(row, BadRow))
    return size_warnings(rows, preset)


def _sources(rows: Iterable[Any], preset: Any) -> Iterator[_Source]:
    """The distinct (image, output size) pairs of ``rows``, in first-row order."""
    from kontext_core.resolution import context_size

    sizes: dict[str, tuple[int, int] | None] = {}
    found: dict[tuple[str, tuple[int, int]], _Source] = {}
    for row in rows:
        if row.image not in sizes:
            sizes[row.image] = _header_size(row.image)
        size = sizes[row.image]
        if size is None:
            continue
        out = (row.width, row.height) if row.width and row.height else \
            context_size(preset.resolution, size[0], size[1], preset.pixels_per_token)
        source = found.setdefault((row.image, out), _Source(row.image, size, out))
        source.rows.append((row.row_index, row.row_id))
    yield from found.values()


def _header_size(image: str) -> tuple[int, int] | None:
    """(width, height) as the decoder will see it (EXIF turns applied); None when it cannot be
    read here (a URI, a missing or damaged file: the run reports those)."""
    if "://" in image or not os.path.isfile(image):  # a FIFO or device would block open()
        return None
    try:
        with Image.open(image) as img:
            w, h = img.size
            turned = img.getexif().get(_EXIF_ORIENTATION) in _SWAPS_SIDES
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return (h, w) if turned else (w, h)


def _distortion(size: tuple[int, int], out: tuple[int, int]) -> float:
    """How far the output's aspect is from the source's (0: same shape), as the review's
    ``reframed`` check measures it."""
    return abs((out[0] / out[1]) / (size[0] / size[1]) - 1.0)


def _ratio(size: tuple[int, int]) -> str:
    d = gcd(*size)
    return f"{size[0] // d}:{size[1] // d}"


def _warning(s: _Source, preset: Any) -> str:
    index, row_id = s.rows[0]
    rows = f"row {index} (id {row_id!r})" + (f" and {len(s.rows) - 1} more row(s)"
                                             if len(s.rows) > 1 else "")
    (w, h), (ow, oh) = s.size, s.out
    fix = f"crop or pad the source to {_ratio(s.out)} before the run"
    if preset.resolution.kind != "fixed":  # a small model is only good at its native size
        fix += " or set the row's width and height to the source's shape (multiples of 16)"
    return (
        f"{rows}: source {s.image} is {w}x{h} ({w / h:.2f}:1) but {preset.name} makes it "
        f"{ow}x{oh} ({ow / oh:.2f}:1), so the product is squashed or stretched by "
        f"{_distortion(s.size, s.out):.0%} and the review page will flag it 'reframed'; {fix}"
    )
