"""Decoding untrusted source images into the RGB the model expects, or a clear refusal.

Rules (each refusal is a bad row whose reason names the problem and the fix):

- The pixel count is checked from the header, before any pixel data is decoded: an image
  above ``max_pixels`` (a decompression bomb, or just too big to be worth decoding) is
  refused. Pillow's own ``DecompressionBombError`` (raised at open for absurd headers) is
  refused the same way.
- Truncated or corrupt files and non-images (whatever their extension) are refused.
- The EXIF orientation is applied, so the model sees the photo the way viewers show it.
- Animated images (GIF, APNG, WebP): the first frame is used, and a note says so.
- Colour modes: CMYK, palette, grayscale, 1-bit and YCbCr convert to RGB; 16-bit and 32-bit
  integer grayscale are scaled (not clipped) to 8 bits; transparency is flattened onto
  white (the usual product-photo background), with a note.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Part of every cache key: bump when a rule above (or the actor's pre-resize of the context)
# changes the pixels the model is given, so outputs made from the old pixels are recomputed.
DECODE_VERSION = "kontext-batch-decode/1"
DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: larger sources are refused before decoding
_BACKGROUND = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_WIDE_GRAY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why and what to do."""


@dataclass
class DecodedImage:
    image: Image.Image  # RGB, 8 bits per channel, upright
    source_size: tuple[int, int]  # (width, height) as stored, before orientation
    notes: list[str] = field(default_factory=list)  # what was done to make it usable


def _megapixels(n: int) -> str:
    return f"{n / 1e6:.1f} MP"


def check_pixel_limit(size: tuple[int, int], max_pixels: int) -> None:
    """Raise ImageDecodeError when ``size`` holds more than ``max_pixels`` pixels."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"source image has an empty size ({width}x{height}); "
                               "replace the file with a valid image")
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"source image is {width}x{height} ({_megapixels(width * height)}), above the "
            f"limit of {_megapixels(max_pixels)} (--max-pixels); downscale the file, or raise "
            "the limit if the image is genuine")


def _wide_gray_to_l(img: Image.Image) -> Image.Image:
    """16/32-bit integer grayscale -> 8-bit, scaled by the range the mode can hold."""
    values = np.asarray(img)
    if img.mode == "I":  # 32-bit signed: 16-bit sources land here, so scale 16 bits
        top = 65535 if values.size == 0 or values.max() <= 65535 else int(values.max())
        scaled = np.clip(values.astype(np.float64), 0, top) * (255.0 / top)
    else:
        scaled = values.astype(np.float64) * (255.0 / 65535.0)
    return Image.fromarray(np.round(scaled).astype(np.uint8), "L")


def _float_to_l(img: Image.Image) -> Image.Image:
    """32-bit float grayscale: [0, 1] data is scaled to 8 bits, anything else clipped."""
    values = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.round(np.clip(values, 0, 255)).astype(np.uint8), "L")


def _to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode == "P" and "transparency" in img.info or mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        alpha = rgba.getchannel("A")
        if alpha.getextrema()[0] < 255:
            notes.append("transparency flattened onto white")
        background = Image.new("RGBA", rgba.size, (*_BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _WIDE_GRAY_MODES:
        notes.append(f"{mode} grayscale scaled to 8 bits")
        return _wide_gray_to_l(img).convert("RGB")
    if mode == "F":
        notes.append("float grayscale scaled to 8 bits")
        return _float_to_l(img).convert("RGB")
    if mode == "RGB":
        return img
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageDecodeError(f"source image has colour mode {mode!r}, which cannot be "
                               f"converted to RGB ({exc}); save it as an RGB PNG or JPEG") from exc


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Bytes of an untrusted image -> upright 8-bit RGB, or ImageDecodeError with the reason."""
    if not data:
        raise ImageDecodeError("source image file is empty (0 bytes); replace it with a "
                               "valid PNG/JPEG/WebP")
    notes: list[str] = []
    try:
        with warnings.catch_warnings():
            # Pillow warns (DecompressionBombWarning) between its two limits; ours decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"source image is too large to decode safely ({exc}); "
                               "downscale the file") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"source image cannot be decoded: no image format recognises its bytes (they "
            f"start {data[:12]!r}), so it is not an image or a corrupt one; replace it with "
            "a valid PNG/JPEG/WebP") from exc
    except Exception as exc:  # Pillow raises many types for broken headers
        raise ImageDecodeError(
            f"source image cannot be decoded ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt: replace it with a valid PNG/JPEG/WebP") from exc
    with img:
        source_size = img.size
        check_pixel_limit(source_size, max_pixels)
        try:
            # is_animated looks for a second frame only (n_frames may scan the whole file)
            if getattr(img, "is_animated", False):
                img.seek(0)
                notes.append("animated image: used the first frame")
            img.load()
            upright = ImageOps.exif_transpose(img)
            orientation = img.getexif().get(0x0112)
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(f"source image is too large to decode safely ({exc}); "
                                   "downscale the file") from exc
        except Exception as exc:  # truncated data, bad chunks, decoder errors
            raise ImageDecodeError(
                f"source image cannot be decoded ({type(exc).__name__}: {exc}); the file is "
                "truncated or corrupt: replace it with a valid PNG/JPEG/WebP") from exc
        if orientation in range(2, 9):  # 1 is upright; other values are ignored by Pillow
            notes.append(f"EXIF orientation {orientation} applied")
        check_pixel_limit(upright.size, max_pixels)
        try:
            rgb = _to_rgb(upright, notes)
        except ImageDecodeError:
            raise
        except Exception as exc:  # an exotic mode the conversions above do not expect
            raise ImageDecodeError(f"source image has colour mode {upright.mode!r}, which "
                                   f"cannot be converted to RGB ({type(exc).__name__}: {exc}); "
                                   "save it as an RGB PNG or JPEG") from exc
        if rgb is img:  # detach from the file object the with-block closes
            rgb = rgb.copy()
    return DecodedImage(image=rgb, source_size=source_size, notes=notes)
