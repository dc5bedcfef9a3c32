"""Source decoding, pixel by pixel: what the model is given for odd but valid images, and
the refusals for broken ones (pipeline.image_io, used by the actor's decode_source).

The last test runs such images through the whole pipeline with an editor that returns its
input unchanged, so the stored outputs show exactly what the actor decoded."""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

import hardening_images as img
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.actors import _RowFailure, decode_source
from pipeline.image_io import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_before_the_model_sees_the_image(orientation: int) -> None:
    data, upright = img.exif_rotated_jpeg(orientation)
    decoded = decode_image(data)
    assert decoded.image.size == upright.size == (48, 32)
    assert decoded.notes == [f"EXIF orientation {orientation} applied"]
    diff = np.abs(_pixels(decoded.image) - _pixels(upright)).mean()
    assert diff < 4.0  # JPEG noise only
    # The stored pixels, taken as they are, are a different picture (or shape).
    stored = Image.open(io.BytesIO(data)).convert("RGB")
    if stored.size == upright.size:
        assert np.abs(_pixels(stored) - _pixels(upright)).mean() > 20
    else:
        assert stored.size == (32, 48)


def test_exif_rotated_png_decodes_to_the_exact_upright_pixels() -> None:
    data, upright = img.exif_rotated_png(6)
    assert np.array_equal(_pixels(decode_image(data).image), _pixels(upright))


def test_sixteen_bit_grayscale_is_scaled_not_clipped() -> None:
    data, expected = img.gray16_png()
    decoded = decode_image(data)
    arr = np.asarray(decoded.image)
    assert decoded.image.mode == "RGB"
    assert np.array_equal(arr[..., 0], expected) and np.array_equal(arr[..., 2], expected)
    assert arr.min() == 0 and arr.max() == 255 and len(np.unique(arr)) > 200


def test_sixteen_bit_rgb_keeps_its_colours() -> None:
    arr = np.asarray(decode_image(img.rgb16_png()).image).astype(int)
    # x * 8000 / 65535 * 255 for red, y for green, 30000 -> 117 for blue
    assert abs(arr[0, 7, 0] - round(7 * 8000 / 257)) <= 1
    assert abs(arr[7, 0, 1] - round(7 * 8000 / 257)) <= 1
    assert np.all(np.abs(arr[..., 2] - round(30000 / 257)) <= 1)


def test_transparency_is_flattened_onto_white() -> None:
    data, rgba = img.rgba_png()
    decoded = decode_image(data)
    arr = _pixels(decoded.image)
    half = arr.shape[1] // 2
    assert np.all(arr[:, half:] == 255)  # transparent (black underneath) -> white
    assert np.array_equal(arr[:, :half], _pixels(rgba.convert("RGB"))[:, :half])
    assert decoded.notes == ["transparency flattened onto white"]
    palette = decode_image(img.palette_png_with_transparency())
    assert palette.notes == ["transparency flattened onto white"]
    assert (np.asarray(palette.image) == 255).all(axis=-1).any()


@pytest.mark.parametrize("mode,data", [("L", img.gray_png()), ("LA", img.la_png()),
                                       ("1", img.bilevel_png())])
def test_lossless_colour_modes_become_the_same_pixels_in_rgb(mode: str, data: bytes) -> None:
    decoded = decode_image(data)
    expected = img.pattern().convert(mode).convert("RGB")
    assert decoded.image.mode == "RGB"
    assert np.array_equal(_pixels(decoded.image), _pixels(expected))


def test_cmyk_jpeg_becomes_the_same_picture_in_rgb() -> None:
    arr = _pixels(decode_image(img.cmyk_jpeg()).image)
    target = _pixels(img.pattern())
    assert arr.shape == target.shape and np.abs(arr - target).mean() < 6


def test_animated_image_uses_its_first_frame() -> None:
    decoded = decode_image(img.animated_gif(3))
    assert decoded.notes == ["animated image: used the first frame"]
    assert tuple(np.asarray(decoded.image)[5, 5]) == (0, 40, 200)


def test_tiny_and_large_images_decode() -> None:
    assert decode_image(img.one_by_one_png()).image.getpixel((0, 0)) == (200, 10, 10)
    assert decode_image(img.large_png(2048)).image.size == (2048, 2048)


def test_pixel_limit_is_checked_from_the_header_before_decoding(monkeypatch) -> None:
    loads = []
    original_load = Image.Image.load

    def counting_load(self):
        loads.append(self.size)
        return original_load(self)

    monkeypatch.setattr(Image.Image, "load", counting_load)
    with pytest.raises(ImageDecodeError, match=r"7000x7000 \(49\.0 MP\), above the limit of 40\.0 MP"):
        decode_image(img.bomb_png(7000, 7000))
    assert loads == []  # refused from the header: no pixel was decoded
    with pytest.raises(ImageDecodeError, match="above the limit of 0.0 MP"):
        decode_image(img.png(), max_pixels=100)
    assert decode_image(img.png(), max_pixels=48 * 32).image.size == (48, 32)
    assert DEFAULT_MAX_PIXELS == 40_000_000


def test_pillows_own_bomb_error_is_a_refusal_too() -> None:
    # Above Pillow's hard limit (2 x MAX_IMAGE_PIXELS) even a user who raised ours is safe.
    with pytest.raises(ImageDecodeError, match="too large to decode safely"):
        decode_image(img.bomb_png(20000, 20000), max_pixels=10**10)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty (0 bytes)"),
    (b"GIF89a" + b"\x00" * 10, "cannot be decoded"),
    (img.truncated(img.png()), "truncated or corrupt"),
    (img.corrupt_middle(img.png()), "cannot be decoded"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 40, "cannot be decoded"),
    (b"%PDF-1.7\n", "cannot be decoded"),
])
def test_broken_files_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        decode_image(data)


def test_actor_decode_checks_the_planned_hash_and_resizes() -> None:
    data = img.png()
    with pytest.raises(_RowFailure, match="changed after planning"):
        decode_source(data, "0" * 64, None)
    rgb, notes = decode_source(data, hashlib.sha256(data).hexdigest(), lambda size: (32, 32))
    assert rgb.size == (32, 32) and notes == []
    with pytest.raises(_RowFailure, match="above the limit"):
        decode_source(data, hashlib.sha256(data).hexdigest(), None, max_pixels=10)


@pytest.fixture(scope="module")
def ray_with_echo():
    import hardening_editors
    import ray
    from pipeline_helpers import start_ray
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[hardening_editors.__name__])
    start_ray(num_cpus=2)
    yield hardening_editors.echo_factory
    ray.shutdown()


def test_pipeline_stores_what_the_actor_decoded_upright(ray_with_echo, tmp_path: Path) -> None:
    from pipeline.runner import RunConfig, run_batch

    folder = tmp_path / "m"
    (folder / "images").mkdir(parents=True)
    exif_png, upright = img.exif_rotated_png(8)
    exif_jpg, _ = img.exif_rotated_jpeg(6)
    gray16, gray_expected = img.gray16_png()
    files = {"exif8.png": exif_png, "exif6.jpg": exif_jpg, "gray16.png": gray16,
             "rgba.png": img.rgba_png()[0], "anim.gif": img.animated_gif(),
             "big.png": img.bomb_png(7000, 7000)}
    for name, data in files.items():
        (folder / "images" / name).write_bytes(data)
    pd.DataFrame({"image": [f"images/{n}" for n in files], "instruction": ["as is"] * len(files),
                  "seed": list(range(len(files))), "row_id": list(files)}).to_parquet(
        folder / "manifest.parquet", index=False)
    summary = run_batch(RunConfig(manifest=str(folder / "manifest.parquet"),
                                  out=str(tmp_path / "out"), model="tiny-random", device="cpu",
                                  actors=1, reports=False, progress=False,
                                  max_pixels=10_000_000),
                        editor_factory=ray_with_echo)
    rows = {r["row_id"]: r for r in pq.read_table(summary.results).to_pylist()}

    def stored(row_id: str) -> np.ndarray:
        return _pixels(Image.open(rows[row_id]["output_uri"]).convert("RGB"))

    assert np.array_equal(stored("exif8.png"), _pixels(upright))
    assert rows["exif8.png"]["notes"] == "EXIF orientation 8 applied"
    assert stored("exif6.jpg").shape == (32, 48, 3)
    assert np.abs(stored("exif6.jpg") - _pixels(upright)).mean() < 4.0
    assert np.array_equal(stored("gray16.png")[..., 1], gray_expected)
    assert np.all(stored("rgba.png")[:, 24:] == 255)
    assert tuple(stored("anim.gif")[3, 3]) == (0, 40, 200)
    assert rows["anim.gif"]["notes"] == "animated image: used the first frame"
    big = rows["big.png"]
    assert big["status"] == "failed" and big["error_class"] == "bad-row"
    assert "above the limit of 10.0 MP" in big["reason"] and "--max-pixels" in big["reason"]
    assert summary.exit_code == 1 and summary.counts["done"] == 5
