"""Image files for the hardening suite: odd but valid images, and broken ones.

Every builder returns the file's bytes. The pattern is asymmetric (a bright corner block
and a gradient), so a rotation or a flip is visible in the pixels.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def pattern(width: int = 48, height: int = 32) -> Image.Image:
    """RGB image: horizontal red ramp, vertical green ramp, white block top-left."""
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    arr = np.stack([x, y, np.full_like(x, 60.0)], axis=-1).round().astype(np.uint8)
    arr[: height // 4, : width // 4] = 255
    return Image.fromarray(arr, "RGB")


def save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png() -> bytes:
    return save(pattern(), "PNG")


def jpeg() -> bytes:
    return save(pattern(), "JPEG", quality=95)


def exif_rotated_jpeg(orientation: int = 6) -> tuple[bytes, Image.Image]:
    """A JPEG stored sideways with an EXIF orientation tag; returns (bytes, upright image).

    Orientation 6 means "rotate 90° clockwise to display": the stored pixels are the
    upright image rotated 90° counter-clockwise."""
    upright = pattern(48, 32)
    stored = {6: upright.transpose(Image.Transpose.ROTATE_90),
              8: upright.transpose(Image.Transpose.ROTATE_270),
              3: upright.transpose(Image.Transpose.ROTATE_180)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(stored, "JPEG", quality=98, exif=exif.tobytes()), upright


def exif_rotated_png(orientation: int = 6) -> tuple[bytes, Image.Image]:
    """Like exif_rotated_jpeg but lossless (PNG eXIf chunk), for exact pixel checks."""
    upright = pattern(48, 32)
    stored = {6: upright.transpose(Image.Transpose.ROTATE_90),
              8: upright.transpose(Image.Transpose.ROTATE_270)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(stored, "PNG", exif=exif.tobytes()), upright


def cmyk_jpeg() -> bytes:
    return save(pattern().convert("CMYK"), "JPEG", quality=95)


def gray16_png() -> tuple[bytes, np.ndarray]:
    """16-bit grayscale PNG with values across the whole 16-bit range; returns (bytes,
    the expected 8-bit values)."""
    values = np.linspace(0, 65535, 32 * 32).round().astype(np.uint16).reshape(32, 32)
    img = Image.fromarray(values)
    assert img.mode == "I;16"
    return save(img, "PNG"), np.round(values / 257.0).astype(np.uint8)


def rgb16_png() -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one)."""
    width, height = 8, 8
    rows = b""
    for y in range(height):
        rows += b"\x00" + b"".join(struct.pack(">HHH", x * 8000, y * 8000, 30000)
                                   for x in range(width))
    return _png_file(width, height, bit_depth=16, color_type=2, raw=rows)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_file(width: int, height: int, bit_depth: int, color_type: int, raw: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def palette_png_with_transparency() -> bytes:
    img = pattern().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return save(img, "PNG", transparency=0)


def rgba_png() -> tuple[bytes, Image.Image]:
    """Left half opaque pattern, right half fully transparent (black underneath)."""
    rgba = pattern().convert("RGBA")
    arr = np.asarray(rgba).copy()
    arr[:, arr.shape[1] // 2:, :3] = 0
    arr[:, arr.shape[1] // 2:, 3] = 0
    img = Image.fromarray(arr, "RGBA")
    return save(img, "PNG"), img


def la_png() -> bytes:
    return save(pattern().convert("LA"), "PNG")


def gray_png() -> bytes:
    return save(pattern().convert("L"), "PNG")


def bilevel_png() -> bytes:
    return save(pattern().convert("1"), "PNG")


def one_by_one_png() -> bytes:
    return save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG")


def large_png(side: int = 2048) -> bytes:
    """A genuinely large (but allowed) image: 4 MP of a flat colour compresses small."""
    return save(Image.new("RGB", (side, side), (30, 90, 200)), "PNG")


def animated_gif(frames: int = 3) -> bytes:
    images = [Image.new("RGB", (32, 32), (80 * i, 40, 200 - 60 * i)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=50,
                   loop=0)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels; the data is a single zlib stream of
    zero rows (a classic decompression bomb: tiny file, enormous image)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + width)  # filter byte + one grayscale byte per pixel
    data = b""
    for _ in range(min(height, 64)):  # enough to start decoding; the rest is missing
        data += compressor.compress(row)
    data += compressor.flush()
    return _png_file(width, height, bit_depth=8, color_type=0, raw=b"")[:33] + _chunk(
        b"IDAT", data) + _chunk(b"IEND", b"")


def truncated(data: bytes, keep: float = 0.5) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def corrupt_middle(data: bytes) -> bytes:
    """Same length, garbage in the middle (headers intact)."""
    mid = len(data) // 2
    return data[:mid] + bytes((b ^ 0x5A) for b in data[mid: mid + 64]) + data[mid + 64:]
