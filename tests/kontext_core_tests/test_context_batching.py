"""A batch's context images are encoded one autoencoder call per encoded size, with the values
each image gets alone (to float rounding: a conv at batch 8 may take another kernel than at 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from kontext_core import KontextEditor


@pytest.fixture(scope="module")
def editor() -> KontextEditor:
    return KontextEditor.load("kontext-tiny")


def scene(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def counting_encode(editor: KontextEditor, monkeypatch) -> list[int]:
    """Wrap the autoencoder's encode; returns the list of batch sizes it was called with."""
    calls: list[int] = []
    real = editor.autoencoder.encode

    def encode(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return real(x)

    monkeypatch.setattr(editor.autoencoder, "encode", encode)
    return calls


def test_one_call_per_encoded_size_with_each_images_own_values(editor, monkeypatch):
    # kontext-tiny's policy is one fixed size; let each image keep its own, as 'kontext' would
    monkeypatch.setattr(editor, "context_size_for", lambda size: size)
    images = [scene(0, (64, 64)), scene(1, (96, 48)), scene(2, (64, 64)), scene(3, (64, 64))]
    alone = [editor.encode_context(im) for im in images]
    calls = counting_encode(editor, monkeypatch)
    together = editor.encode_contexts(images)
    assert sorted(calls) == [1, 3]
    assert [size for _, size in together] == [size for _, size in alone]
    for (a, _), (b, _) in zip(alone, together, strict=True):
        assert a.shape == b.shape and a.shape[0] == 1
        assert ((a - b).norm() / a.norm()).item() < 1e-4


def test_edit_encodes_each_distinct_image_once_in_one_call(editor, monkeypatch):
    """Four rows, two products: one encode call of two images; rows of a product get its context."""
    a, b = scene(4, (64, 64)), scene(5, (64, 64))
    calls = counting_encode(editor, monkeypatch)
    out = editor.edit([a, b, a, b], ["make it red", "make it blue", "make it red", "make it blue"],
                      [1, 2, 1, 2], steps=2)
    assert calls == [2]
    pixels = [np.asarray(im, dtype=np.int16) for im in out.images]
    assert np.abs(pixels[0] - pixels[2]).max() <= 1 and np.abs(pixels[1] - pixels[3]).max() <= 1
    assert np.abs(pixels[0] - pixels[1]).max() > 1
