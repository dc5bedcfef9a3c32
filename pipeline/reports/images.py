"""Find and open source and output images named in a run's results and ledger."""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from PIL import Image, ImageOps

_URI_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


@dataclass(frozen=True)
class Located:
    """Where an image is: a local file or a remote URI (opened through pyarrow.fs)."""

    ref: str
    path: Path | None = None
    uri: str | None = None
    problem: str | None = None  # why it could not be found


def safe_name(text: str, limit: int = 48) -> str:
    """A file name from user text: safe characters only, plus a short hash so names stay unique."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:limit] or "x"
    return f"{stem}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def locate(ref: str | None, bases: list[Path]) -> Located:
    """Resolve `ref` (absolute path, file:// URI, other URI, or a path relative to one of `bases`)."""
    if ref is None or str(ref).strip() == "":
        return Located(ref="", problem="no path given")
    ref = str(ref)
    if ref.startswith("file://"):
        path = Path(unquote(urlparse(ref).path))
        return Located(ref, path=path) if path.is_file() else Located(ref, problem=f"{path} does not exist")
    if _URI_SCHEME.match(ref):
        return Located(ref, uri=ref)
    path = Path(ref)
    if path.is_absolute():
        return Located(ref, path=path) if path.is_file() else Located(ref, problem=f"{path} does not exist")
    for base in bases:
        candidate = base / path
        if candidate.is_file():
            return Located(ref, path=candidate)
    return Located(ref, problem=f"{ref} not found under {', '.join(str(b) for b in bases) or 'any folder'}")


def open_image(located: Located, draft_size: int | None = None,
               max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(decoded image, its full size). JPEGs decode at reduced scale when `draft_size` allows
    (much faster); the image's metadata (info, text chunks) is kept. An image with more than
    `max_pixels` pixels (from its header) is refused with ValueError before any decoding."""
    if located.problem:
        raise OSError(located.problem)
    if located.path is not None:
        img = Image.open(located.path)
    else:
        from pyarrow import fs  # remote stores only

        filesystem, path = fs.FileSystem.from_uri(located.uri)
        with filesystem.open_input_stream(path) as stream:
            img = Image.open(io.BytesIO(stream.read()))
    full_size = img.size
    if max_pixels is not None and full_size[0] * full_size[1] > max_pixels:
        raise ValueError(f"{full_size[0]}x{full_size[1]} is above the run's pixel limit "
                         f"({max_pixels:_} pixels); not decoded")
    if draft_size and img.format == "JPEG":
        img.draft("RGB", (draft_size, draft_size))
    img.load()
    orientation = img.getexif().get(0x0112, 1)
    if orientation != 1:  # show sources upright, as the model saw them
        img = ImageOps.exif_transpose(img)
        if orientation in (5, 6, 7, 8):  # quarter turns swap width and height
            full_size = (full_size[1], full_size[0])
    return img, full_size


def fit(img: Image.Image, size: int) -> Image.Image:
    """RGB copy fitted inside size x size, aspect kept; never enlarged (the analysis size)."""
    img = img.convert("RGB")
    scale = min(size / img.width, size / img.height, 1.0)
    target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    if target == img.size:
        return img
    return img.resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0)


def fill(img: Image.Image, size: int) -> Image.Image:
    """Scale `img` to fill a size x size box (aspect kept: its longer side becomes `size`), for
    display, so a small output shows as large as its source.

    Enlarging by a whole factor of 2 or more uses NEAREST, so reviewers see the model's real
    pixels as crisp blocks; any other change of size uses LANCZOS. Returns `img` itself when it
    already fills the box."""
    longest = max(img.width, img.height)
    if longest == size:
        return img
    factor, remainder = divmod(size, longest)
    if remainder == 0 and factor >= 2:
        return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    scale = size / longest
    target = (max(1, min(size, round(img.width * scale))), max(1, min(size, round(img.height * scale))))
    return img.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0 if scale < 1 else None)
