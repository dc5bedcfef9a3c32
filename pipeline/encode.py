"""Output file encoding: formats, their fixed encoder settings, and the bytes.

The settings are part of the cache key (pipeline.cache), so they are constants here:
changing one changes every key of that format, as it must (the bytes change).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from PIL import Image

# Bump when the embedded provenance changes the bytes (pipeline.reports.provenance).
PROVENANCE_VERSION = 1

ENCODERS: Mapping[str, Mapping[str, Any]] = {
    "png": {"compress_level": 6},
    "jpeg": {"quality": 92, "subsampling": 0, "optimize": False},
    "webp": {"quality": 92, "method": 4, "lossless": False},
}
EXTENSIONS: Mapping[str, str] = {"png": "png", "jpeg": "jpg", "webp": "webp"}
FORMAT_ALIASES: Mapping[str, str] = {"jpg": "jpeg"}


def normalise_format(fmt: str) -> str:
    """'JPG' -> 'jpeg'; raises ValueError naming the allowed formats."""
    name = FORMAT_ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
    if name not in ENCODERS:
        raise ValueError(f"output format {fmt!r} is not supported; use one of "
                         f"{', '.join(sorted(ENCODERS))}")
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


def _provenance_encoder():
    """pipeline.reports.provenance.encode_image_with_provenance when it exists, else None."""
    try:
        from pipeline.reports.provenance import encode_image_with_provenance
    except ImportError:
        return None
    return encode_image_with_provenance


def encode_image(img: Image.Image, fmt: str, params: Mapping[str, Any]) -> bytes:
    """Encode an RGB image with the fixed settings of ``fmt``, embedding ``params``
    (provenance: key inputs, never run-specific values) when the reports module offers it."""
    name = normalise_format(fmt)
    settings = dict(ENCODERS[name])
    encoder = _provenance_encoder()
    if encoder is not None:
        return encoder(img, name, dict(params), **settings)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format=name.upper(), **settings)
    return buf.getvalue()
