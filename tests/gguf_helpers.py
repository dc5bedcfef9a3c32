"""Writing tiny Kontext transformers as GGUF files (what users download from the GGUF repos).

Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 are quantized by the ``gguf`` package (gguf.quants.quantize). It has no
quantizer for the K types, so a plain one is here (round-to-nearest with the block's min/max; not
llama.cpp's search, any valid bytes do for parity); its bytes are checked against the package's
own dequantizer in the tests. 2-D weights whose rows are not whole blocks, and every 1-D tensor,
are written as F32, like the published GGUF conversions keep small tensors unquantized.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import torch

T = gguf.GGMLQuantizationType
QUANT_TYPES = ("Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).reshape(-1, 1).view(np.uint8)


def _pack_k_scales(sc: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """8 six-bit scales and mins per block -> the 12-byte K layout."""
    sc, mn = sc.astype(np.uint8), mn.astype(np.uint8)
    out = np.zeros((sc.shape[0], 12), np.uint8)
    out[:, 0:4] = (sc[:, :4] & 63) | ((sc[:, 4:] >> 4) << 6)
    out[:, 4:8] = (mn[:, :4] & 63) | ((mn[:, 4:] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:] & 15) | ((mn[:, 4:] & 15) << 4)
    return out


def _k_affine(x: np.ndarray, levels: int) -> tuple[np.ndarray, ...]:
    """Per 32-value sub-block x ≈ d·sc·q − dmin·m, 6-bit sc and m, q in [0, levels]."""
    sub = x.reshape(-1, 8, 32)
    low = np.minimum(sub.min(-1), 0.0)
    step = np.maximum((sub.max(-1) - low) / levels, 1e-12)
    d = np.maximum(step.max(-1) / 63, 1e-12)
    dmin = np.maximum((-low).max(-1) / 63, 1e-12)
    d, dmin = d.astype(np.float16).astype(np.float32), dmin.astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(step / d[:, None]), 1, 63)
    mn = np.clip(np.round(-low / dmin[:, None]), 0, 63)
    scale = (d[:, None] * sc)[:, :, None]
    q = np.clip(np.round((sub + (dmin[:, None] * mn)[:, :, None]) / scale), 0, levels).astype(np.uint8)
    return d, dmin, sc, mn, q


def _nibble_groups(q: np.ndarray) -> np.ndarray:
    """[n, 8, 32] values < 16 -> 128 bytes: group j = sub-block 2j low | 2j+1 high."""
    return (q[:, 0::2] | (q[:, 1::2] << 4)).reshape(-1, 128)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    d, dmin, sc, mn, q = _k_affine(x, 15)
    return np.hstack((_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, mn), _nibble_groups(q)))


def quantize_q5_k(x: np.ndarray) -> np.ndarray:
    d, dmin, sc, mn, q = _k_affine(x, 31)
    qh = np.zeros((q.shape[0], 32), np.uint8)
    for s in range(8):
        qh |= ((q[:, s] >> 4) & 1) << s
    return np.hstack((_f16_bytes(d), _f16_bytes(dmin), _pack_k_scales(sc, mn), qh, _nibble_groups(q & 15)))


def quantize_q6_k(x: np.ndarray) -> np.ndarray:
    sub = x.reshape(-1, 16, 16)
    step = np.maximum(np.abs(sub).max(-1) / 31, 1e-12)
    d = np.maximum(step.max(-1) / 127, 1e-12).astype(np.float16).astype(np.float32)
    sc = np.clip(np.round(step / d[:, None]), 1, 127)
    q = np.clip(np.round(sub / (d[:, None] * sc)[:, :, None]) + 32, 0, 63).astype(np.uint8).reshape(-1, 2, 4, 32)
    ql = np.concatenate((q[:, :, 0] & 15 | (q[:, :, 2] & 15) << 4, q[:, :, 1] & 15 | (q[:, :, 3] & 15) << 4), -1)
    qh = (q[:, :, 0] >> 4) | (q[:, :, 1] >> 4) << 2 | (q[:, :, 2] >> 4) << 4 | (q[:, :, 3] >> 4) << 6
    return np.hstack((ql.reshape(-1, 128), qh.reshape(-1, 64), sc.astype(np.int8).view(np.uint8),
                      _f16_bytes(d)))


_K = {"Q4_K": quantize_q4_k, "Q5_K": quantize_q5_k, "Q6_K": quantize_q6_k}


def quantize(w: np.ndarray, qtype: str) -> np.ndarray:
    """[rows, cols] float32 -> [rows, row bytes] uint8 in ``qtype``."""
    if qtype in _K:
        return _K[qtype](w.astype(np.float32).reshape(-1, 256)).reshape(w.shape[0], -1)
    return gguf.quants.quantize(w.astype(np.float32), T[qtype])


def block_size(qtype: str) -> int:
    return gguf.GGML_QUANT_SIZES[T[qtype]][0]


def write_gguf(path: Path, state: dict[str, torch.Tensor], qtype: str, prefix: str = "",
               arch: str = "flux", plain: str = "F32") -> Path:
    """A native (BFL-named) state dict as a GGUF file: 2-D weights in ``qtype`` where rows are
    whole blocks, everything else in ``plain`` (F32, F16 or BF16)."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, tensor in state.items():
        x = tensor.detach().float().numpy()
        if x.ndim == 2 and x.shape[1] % block_size(qtype) == 0 and key.endswith(".weight"):
            data, kind = quantize(x, qtype), T[qtype]
            writer.add_tensor(prefix + key, data, raw_shape=data.shape, raw_dtype=kind)
        elif plain == "BF16":
            data = gguf.quants.quantize(x, T.BF16)
            writer.add_tensor(prefix + key, data, raw_shape=data.shape, raw_dtype=T.BF16)
        else:
            writer.add_tensor(prefix + key, x.astype(np.float16 if plain == "F16" else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
