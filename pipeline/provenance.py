"""Generation parameters carried inside every output file, plus a sidecar JSON.

Where the parameters live:

* PNG: a text chunk named ``kontext`` holding JSON.
* JPEG: the COM (comment) segment holding the same JSON (at most 65,533 bytes).
* WebP: EXIF ImageDescription (tag 0x010E) holding the same JSON.

The JSON is ``{"schema": "kontext-batch/provenance@1", "params": {...}}`` with sorted keys and
ASCII only (non-ASCII characters are \\u-escaped), so it round-trips byte for byte. `read_provenance`
returns ``params`` exactly as given to `encode_image_with_provenance`.

Note for the content-addressed store: a cached output keeps the run id and row id of the run that
generated it; a later run that hits the cache does not rewrite the file.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from typing import Any

from PIL import Image, PngImagePlugin

from manifests.limits import FORMAT_ALIASES, OUTPUT_FORMATS

PROVENANCE_SCHEMA = "kontext-batch/provenance@1"
PNG_TEXT_KEY = "kontext"
EXIF_IMAGE_DESCRIPTION = 0x010E
JPEG_COMMENT_LIMIT = 65533  # a JPEG segment holds 65,535 bytes including its 2-byte length
# PIL's name of each output format and alias (manifests.limits lists them)
FORMATS = {**{f: f.upper() for f in OUTPUT_FORMATS},
           **{alias: name.upper() for alias, name in FORMAT_ALIASES.items()}}


class ProvenanceError(ValueError):
    """Parameters cannot be embedded, or a file carries none / unreadable ones."""


def provenance_params(*, run_id: str, row_id: str, instruction: str, seed: int, model: str,
                      fingerprint: str, sampler: Mapping[str, Any], key: str | None = None,
                      **extra: Any) -> dict[str, Any]:
    """The canonical parameter dict for one output (what the runner should embed)."""
    params: dict[str, Any] = {
        "run_id": run_id, "row_id": row_id, "instruction": instruction, "seed": int(seed),
        "model": model, "fingerprint": fingerprint, "sampler": dict(sampler),
    }
    if key is not None:
        params["key"] = key
    params.update(extra)
    return params


def _payload(params: Mapping[str, Any]) -> str:
    if not isinstance(params, Mapping):
        raise ProvenanceError(f"provenance params must be a mapping, got {type(params).__name__}")
    try:
        text = json.dumps({"schema": PROVENANCE_SCHEMA, "params": params}, sort_keys=True,
                          separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProvenanceError(
            f"provenance params are not plain JSON values ({exc}); pass str/int/float/bool/None, "
            "lists and dicts with str keys"
        ) from None
    if json.loads(text)["params"] != params:
        raise ProvenanceError(
            "provenance params would not read back equal (tuples or non-str dict keys?); "
            "pass lists and dicts with str keys"
        )
    return text


def _parse(text: str | bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProvenanceError(f"{where} is not provenance JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != PROVENANCE_SCHEMA or not isinstance(doc.get("params"), dict):
        raise ProvenanceError(f"{where} does not hold {PROVENANCE_SCHEMA} provenance")
    return doc["params"]


def encode_image_with_provenance(img: Image.Image, fmt: str, params: Mapping[str, Any], **save_kwargs: Any) -> bytes:
    """Encode `img` as png/jpeg/webp with `params` embedded; extra keywords go to PIL's save."""
    pil_format = FORMATS.get(fmt.lower().lstrip("."))
    if pil_format is None:
        raise ProvenanceError(f"output format {fmt!r} cannot carry provenance; use png, jpeg or webp")
    payload = _payload(params)
    buffer = io.BytesIO()
    if pil_format == "PNG":
        info = save_kwargs.pop("pnginfo", None) or PngImagePlugin.PngInfo()
        info.add_text(PNG_TEXT_KEY, payload)  # ASCII payload -> tEXt chunk before the image data
        img.save(buffer, "PNG", pnginfo=info, **save_kwargs)
    elif pil_format == "JPEG":
        data = payload.encode("ascii")
        if len(data) > JPEG_COMMENT_LIMIT:
            raise ProvenanceError(
                f"provenance JSON is {len(data)} bytes; a JPEG comment holds at most {JPEG_COMMENT_LIMIT}. "
                "Shorten the instruction or write PNG/WebP"
            )
        if img.mode not in ("RGB", "L", "CMYK"):
            img = img.convert("RGB")
        img.save(buffer, "JPEG", comment=data, **save_kwargs)
    else:
        exif = Image.Exif()
        exif[EXIF_IMAGE_DESCRIPTION] = payload
        img.save(buffer, "WEBP", exif=exif.tobytes(), **save_kwargs)
    return buffer.getvalue()


def provenance_from_image(img: Image.Image) -> dict[str, Any]:
    """Read the parameters from an opened image (PNG text chunk, JPEG comment or EXIF)."""
    fmt = img.format or "image"
    text: Any = None
    if fmt == "PNG":
        text = img.info.get(PNG_TEXT_KEY)
        if text is None and hasattr(img, "text"):
            text = img.text.get(PNG_TEXT_KEY)  # chunk written after the image data
    elif fmt == "JPEG":
        text = img.info.get("comment")
    if text is None:
        text = img.getexif().get(EXIF_IMAGE_DESCRIPTION)
    if text is None:
        raise ProvenanceError(f"this {fmt} file carries no kontext provenance (no '{PNG_TEXT_KEY}' text "
                              "chunk, comment or EXIF description); see its sidecar .json")
    return _parse(text, f"{fmt} provenance field")


def read_provenance(data: bytes) -> dict[str, Any]:
    """The parameters embedded in encoded image bytes."""
    try:
        img = Image.open(io.BytesIO(data))
    except (OSError, SyntaxError) as exc:  # PIL raises UnidentifiedImageError (an OSError)
        raise ProvenanceError(f"bytes are not a readable image ({exc})") from None
    with img:
        return provenance_from_image(img)


def sidecar_json(params: Mapping[str, Any], *, image_bytes: bytes | None = None) -> bytes:
    """Sidecar file text: schema, params and (when given) the image's sha256."""
    _payload(params)  # same validation as embedding
    doc: dict[str, Any] = {"schema": PROVENANCE_SCHEMA, "params": params}
    if image_bytes is not None:
        doc["image_sha256"] = hashlib.sha256(image_bytes).hexdigest()
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


def read_sidecar(data: bytes) -> dict[str, Any]:
    """The params of a sidecar written by `sidecar_json`."""
    return _parse(data, "sidecar")
