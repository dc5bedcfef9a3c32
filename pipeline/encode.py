"""Output file encoding: formats, their fixed encoder settings, and the bytes.

The settings are part of the cache key (pipeline.cache), so they are constants here:
changing one changes every key of that format, as it must (the bytes change).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from PIL import Image

from manifests.limits import OUTPUT_FORMATS, format_name
from pipeline.provenance import encode_image_with_provenance

# Bump when the embedded provenance changes the bytes (pipeline.provenance).
PROVENANCE_VERSION = 1

ENCODERS: Mapping[str, Mapping[str, Any]] = {
    "png": {"compress_level": 6},
    "jpeg": {"quality": 92, "subsampling": 0, "optimize": False},
    "webp": {"quality": 92, "method": 4, "lossless": False},
}
EXTENSIONS: Mapping[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}
assert set(ENCODERS) == set(EXTENSIONS) == set(OUTPUT_FORMATS)  # one encoder per listed format


def normalise_format(fmt: str) -> str:
    """'JPG' -> 'jpeg'; raises ValueError naming the allowed formats."""
    name = format_name(fmt)
    if name is None:
        raise ValueError(f"output format {fmt!r} is not supported; use one of "
                         f"{', '.join(OUTPUT_FORMATS)}")
    return name


def output_spec(fmt: str) -> dict[str, Any]:
    """The encoding part of a cache key: format, encoder settings, provenance version."""
    name = normalise_format(fmt)
    return {"format": name,
            "encoder": {**ENCODERS[name], "provenance": PROVENANCE_VERSION}}


@lru_cache(maxsize=16)
def _shared_spec(fmt: str, settings: str) -> Mapping[str, Any]:
    return output_spec(fmt)


def shared_output_spec(fmt: str) -> Mapping[str, Any]:
    """output_spec for planning many rows: one shared (read-only) dict per format."""
    return _shared_spec(fmt, repr(sorted(ENCODERS.get(normalise_format(fmt), {}).items())))


def extension(fmt: str) -> str:
    """File extension (no dot) of a format."""
    return EXTENSIONS[normalise_format(fmt)]


def encode_image(img: Image.Image, fmt: str, params: Mapping[str, Any]) -> bytes:
    """Encode an RGB image with the fixed settings of ``fmt``, embedding ``params``
    (provenance: key inputs, never run-specific values)."""
    name = normalise_format(fmt)
    return encode_image_with_provenance(img, name, dict(params), **ENCODERS[name])
