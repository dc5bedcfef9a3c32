"""GGML Q8_0 and Q4_K block encoders in torch, so a 12B transformer quantizes on the GPU in seconds.

Round-to-nearest (Q4_K: each 32-value sub-block's min/max, six-bit scales and mins), not
llama.cpp's search: any valid blocks do for measuring memory and speed. Layouts are those that
``kontext_core.quant.ggml`` decodes (its docstring lists the bytes); the tests check the round trip
through it and against the ``gguf`` package's Q8_0 quantizer.
"""

from __future__ import annotations

import torch

# GGML type ids and (values per block, bytes per block), as in kontext_core.quant.ggml.
Q8_0, Q4_K, BF16 = 8, 12, 30
BLOCKS = {Q8_0: (32, 34), Q4_K: (256, 144), BF16: (1, 2)}
NAMES = {"Q8_0": Q8_0, "Q4_K": Q4_K}


def _f16_bytes(x: torch.Tensor) -> torch.Tensor:
    """[n] float -> [n, 2] uint8: the little-endian fp16 of each value."""
    return x.to(torch.float16).reshape(-1, 1).view(torch.uint8)


def _f16_round(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).float()


def encode_q8_0(x: torch.Tensor) -> torch.Tensor:
    """[n, 32] float -> [n, 34] uint8: d f16 | q int8[32], x ≈ d·q."""
    x = x.float()
    d = x.abs().amax(-1) / 127
    inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
    q = torch.round(x * inv[:, None]).clamp(-127, 127).to(torch.int8)
    return torch.cat((_f16_bytes(d), q.view(torch.uint8)), dim=-1)


def _pack_scales(sc: torch.Tensor, mn: torch.Tensor) -> torch.Tensor:
    """[n, 8] six-bit scales and mins -> [n, 12] bytes (the K-quant scale layout)."""
    sc, mn = sc.to(torch.uint8), mn.to(torch.uint8)
    return torch.cat(((sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6),
                      (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6),
                      (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)), dim=-1)


def encode_q4_k(x: torch.Tensor) -> torch.Tensor:
    """[n, 256] float -> [n, 144] uint8: d f16 | dmin f16 | scales[12] | nibbles[128];
    sub-block s of 32 values ≈ d·sc[s]·q − dmin·mn[s], q in [0, 15]."""
    sub = x.float().reshape(-1, 8, 32)
    low = sub.amin(-1).clamp(max=0.0)
    step = ((sub.amax(-1) - low) / 15).clamp(min=1e-12)
    d = _f16_round((step.amax(-1) / 63).clamp(min=1e-12))
    dmin = _f16_round(((-low).amax(-1) / 63).clamp(min=1e-12))
    sc = torch.round(step / d[:, None]).clamp(1, 63)
    mn = torch.round(-low / dmin[:, None]).clamp(0, 63)
    scale = (d[:, None] * sc)[:, :, None]
    q = torch.round((sub + (dmin[:, None] * mn)[:, :, None]) / scale).clamp(0, 15).to(torch.uint8)
    nibbles = (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)  # group j: sub-block 2j low, 2j+1 high
    return torch.cat((_f16_bytes(d), _f16_bytes(dmin), _pack_scales(sc, mn), nibbles), dim=-1)


ENCODERS = {Q8_0: encode_q8_0, Q4_K: encode_q4_k}


def quantizable(shape: tuple[int, ...], qtype: int) -> bool:
    """2-D weights whose rows are whole blocks are quantized; everything else stays plain (BF16)."""
    return len(shape) == 2 and shape[1] % BLOCKS[qtype][0] == 0


def row_bytes(qtype: int, cols: int) -> int:
    per_block, size = BLOCKS[qtype]
    return cols // per_block * size


def encode(weight: torch.Tensor, qtype: int) -> torch.Tensor:
    """[rows, cols] -> [rows, row bytes] uint8 in ``qtype``, computed on the weight's device."""
    rows, cols = weight.shape
    blocks = ENCODERS[qtype](weight.reshape(-1, BLOCKS[qtype][0]))
    return blocks.reshape(rows, row_bytes(qtype, cols))
