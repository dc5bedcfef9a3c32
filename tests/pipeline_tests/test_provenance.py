"""Provenance read back from an output file (and its sidecar) equals the row's parameters."""

import hashlib
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from synthetic_runs import make_synthetic_run

from pipeline.provenance import (
    ProvenanceError,
    encode_image_with_provenance,
    provenance_params,
    read_provenance,
    read_sidecar,
    sidecar_json,
)


def _image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))


PARAMS = provenance_params(run_id="run-7", row_id="sku-1/bg-2", instruction="Put the mug on oak — “warm” light",
                           seed=42, model="flux.1-kontext-dev", fingerprint="ab" * 32,
                           sampler={"steps": 28, "guidance": 2.5, "size": [1024, 1024]}, key="k" * 64)


@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("jpg", "JPEG"), ("webp", "WEBP")])
def test_round_trip_in_every_format(fmt, pil_format):
    data = encode_image_with_provenance(_image(), fmt, PARAMS)
    assert Image.open(io.BytesIO(data)).format == pil_format
    assert read_provenance(data) == PARAMS


def test_pixels_are_unchanged_by_embedding_in_png():
    img = _image()
    data = encode_image_with_provenance(img, "png", PARAMS, compress_level=6)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(img))


def test_png_carries_a_kontext_text_chunk_and_jpeg_a_comment():
    png = Image.open(io.BytesIO(encode_image_with_provenance(_image(), "png", PARAMS)))
    assert json.loads(png.info["kontext"])["params"]["seed"] == 42
    jpeg = Image.open(io.BytesIO(encode_image_with_provenance(_image(), "jpeg", PARAMS, quality=90)))
    assert json.loads(jpeg.info["comment"])["params"]["row_id"] == "sku-1/bg-2"


def test_sidecar_round_trips_and_records_the_image_digest():
    data = encode_image_with_provenance(_image(), "png", PARAMS)
    sidecar = sidecar_json(PARAMS, image_bytes=data)
    assert read_sidecar(sidecar) == PARAMS
    assert json.loads(sidecar)["image_sha256"] == hashlib.sha256(data).hexdigest()


def test_files_without_provenance_and_bad_params_give_clear_errors():
    buffer = io.BytesIO()
    _image().save(buffer, "PNG")
    with pytest.raises(ProvenanceError, match="carries no kontext provenance"):
        read_provenance(buffer.getvalue())
    with pytest.raises(ProvenanceError, match="not a readable image"):
        read_provenance(b"not an image")
    with pytest.raises(ProvenanceError, match="cannot carry provenance; use png, jpeg or webp"):
        encode_image_with_provenance(_image(), "tiff", PARAMS)
    with pytest.raises(ProvenanceError, match="would not read back equal"):
        encode_image_with_provenance(_image(), "png", {**PARAMS, "size": (1, 2)})
    with pytest.raises(ProvenanceError, match="not plain JSON values"):
        encode_image_with_provenance(_image(), "png", {**PARAMS, "seed": {1, 2}})
    with pytest.raises(ProvenanceError, match="a JPEG comment holds at most"):
        encode_image_with_provenance(_image(), "jpeg", {**PARAMS, "instruction": "x" * 70_000})


@settings(max_examples=25, deadline=None)
@given(instruction=st.text(min_size=1, max_size=200), seed=st.integers(0, 2**63 - 1),
       fmt=st.sampled_from(["png", "jpeg", "webp"]))
def test_any_instruction_and_seed_round_trip(instruction, seed, fmt):
    params = {**PARAMS, "instruction": instruction, "seed": seed}
    assert read_provenance(encode_image_with_provenance(_image(), fmt, params)) == params


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_output_files_of_a_run_carry_their_rows_parameters(tmp_path, fmt):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=3, fmt=fmt)
    for row in run.rows:
        path = row["output_uri"]
        params = read_provenance(open(path, "rb").read())
        assert params == run.params[row["row_id"]]
        assert (params["row_id"], params["instruction"], params["seed"]) == (row["row_id"], row["instruction"], row["seed"])
        with open(path.rsplit(".", 1)[0] + ".json", "rb") as handle:
            assert read_sidecar(handle.read()) == params
