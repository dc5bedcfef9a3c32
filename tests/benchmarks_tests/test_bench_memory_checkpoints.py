"""bench_memory's helpers: the random checkpoint folder is one our loader resolves to the preset's
shapes (BFL single files, bf16, streamed header), and the torch GGUF encoders write the bytes the
reference quantizers write, which kontext_core's dequantizer decodes."""

from __future__ import annotations

import sys
from pathlib import Path

import gguf
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gguf_encode  # noqa: E402
import random_checkpoint  # noqa: E402
from gguf_helpers import quantize_q4_k  # noqa: E402

from kontext_core.checkpoint.safetensors_io import read_header  # noqa: E402
from kontext_core.config import load_preset  # noqa: E402
from kontext_core.loading import resolve_model  # noqa: E402
from kontext_core.quant import ggml  # noqa: E402


def _weights(rows: int, cols: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(3)) * 0.05


def test_q8_0_bytes_match_the_gguf_package():
    w = _weights(8, 256)
    ours = gguf_encode.encode(w, gguf_encode.Q8_0).numpy()
    theirs = gguf.quants.quantize(w.numpy(), gguf.GGMLQuantizationType.Q8_0)
    assert ours.shape == theirs.shape == (8, 8 * 34)
    assert np.array_equal(ours, theirs)


def test_q4_k_bytes_match_the_reference_and_decode():
    w = _weights(4, 512)
    ours = gguf_encode.encode(w, gguf_encode.Q4_K)
    assert np.array_equal(ours.numpy(), quantize_q4_k(w.numpy().reshape(-1, 256)).reshape(4, -1))
    back = ggml.dequantize(ours, ggml.Q4_K, (4, 512), torch.float32)
    assert (back - w).abs().max() < 0.02  # 4-bit steps of a ~0.2-wide range


def test_random_folder_resolves_to_the_preset(tmp_path):
    preset = load_preset("tiny-random")
    folder = random_checkpoint.write_random_folder(tmp_path / "m", preset, torch.device("cpu"))
    header = read_header(folder / random_checkpoint.TRANSFORMER_FILE)
    assert {i.dtype for i in header.values()} == {"BF16"}
    source = resolve_model(folder)
    assert source.transformer.format == "bfl"
    assert source.preset.transformer == preset.transformer and source.preset.autoencoder == preset.autoencoder
    gguf_folder = random_checkpoint.write_gguf_folder(folder, tmp_path / "q", "Q8_0", torch.device("cpu"))
    q = resolve_model(gguf_folder)
    assert q.transformer.format == "gguf" and q.preset.transformer == preset.transformer
    assert "Q8_0" in {i.dtype for i in q.transformer.tensors.infos.values()}
