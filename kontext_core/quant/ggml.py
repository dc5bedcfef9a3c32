"""GGML block formats (what GGUF files store) dequantized with torch, on the weights' device.

Written from the GGML block layouts (llama.cpp's ggml-common.h describes them); checked in the
tests against the ``gguf`` package's own numpy dequantizer on the same bytes. Each function takes
the raw bytes of whole blocks, ``[n_blocks, type_size]`` uint8, and returns float32
``[n_blocks, block_size]``; arithmetic is float32 (the fp16 block scales are widened first).

Block layouts (bytes):
- Q8_0 (32 values, 34 B): d f16 | q int8[32]                       x = d·q
- Q4_0 (32, 18 B): d f16 | nibbles[16] (value i: low nibble of byte i, value 16+i: high)  x = d·(q−8)
- Q4_1 (32, 20 B): d f16 | m f16 | nibbles[16]                     x = d·q + m
- Q5_0 (32, 22 B): d f16 | high bits u32 | nibbles[16]             x = d·(q−16)
- Q5_1 (32, 24 B): d f16 | m f16 | high bits u32 | nibbles[16]     x = d·q + m
- Q4_K (256, 144 B): d f16 | dmin f16 | 6-bit scales/mins[12] | nibbles[128]; 8 sub-blocks of 32
- Q5_K (256, 176 B): as Q4_K plus high bits[32] before the nibbles
- Q6_K (256, 210 B): low nibbles[128] | high 2-bit pairs[64] | int8 scales[16] | d f16; 16 sub-blocks of 16
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# GGML type ids (stable in the format; gguf.GGMLQuantizationType has the same numbers).
F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, BF16 = 0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 30
TYPE_NAMES = {F32: "F32", F16: "F16", BF16: "BF16", Q4_0: "Q4_0", Q4_1: "Q4_1", Q5_0: "Q5_0", Q5_1: "Q5_1",
              Q8_0: "Q8_0", Q4_K: "Q4_K", Q5_K: "Q5_K", Q6_K: "Q6_K"}
# type -> (values per block, bytes per block)
BLOCKS = {F32: (1, 4), F16: (1, 2), BF16: (1, 2), Q4_0: (32, 18), Q4_1: (32, 20), Q5_0: (32, 22),
          Q5_1: (32, 24), Q8_0: (32, 34), Q4_K: (256, 144), Q5_K: (256, 176), Q6_K: (256, 210)}
PLAIN = {F32: torch.float32, F16: torch.float16, BF16: torch.bfloat16}  # stored as ordinary tensors


def _f16(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The little-endian fp16 at byte ``start`` of each block, as float32 [n, 1]."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def _nibbles(packed: torch.Tensor) -> torch.Tensor:
    """[n, 16] bytes -> [n, 32]: the 16 low nibbles, then the 16 high nibbles."""
    return torch.cat((packed & 0x0F, packed >> 4), dim=-1)


def _high_bits(blocks: torch.Tensor, start: int) -> torch.Tensor:
    """The u32 at byte ``start`` as 32 bits [n, 32] (bit i belongs to value i)."""
    word = blocks[:, start:start + 4].to(torch.int64)
    word = word[:, 0] | word[:, 1] << 8 | word[:, 2] << 16 | word[:, 3] << 24
    return ((word[:, None] >> torch.arange(32, device=blocks.device)) & 1).to(torch.uint8)


def q8_0(blocks: torch.Tensor) -> torch.Tensor:
    return _f16(blocks, 0) * blocks[:, 2:].contiguous().view(torch.int8).float()


def q4_0(blocks: torch.Tensor) -> torch.Tensor:
    return _f16(blocks, 0) * (_nibbles(blocks[:, 2:]).float() - 8)


def q4_1(blocks: torch.Tensor) -> torch.Tensor:
    return _f16(blocks, 0) * _nibbles(blocks[:, 4:]).float() + _f16(blocks, 2)


def q5_0(blocks: torch.Tensor) -> torch.Tensor:
    q = _nibbles(blocks[:, 6:]) | (_high_bits(blocks, 2) << 4)
    return _f16(blocks, 0) * (q.float() - 16)


def q5_1(blocks: torch.Tensor) -> torch.Tensor:
    q = _nibbles(blocks[:, 8:]) | (_high_bits(blocks, 4) << 4)
    return _f16(blocks, 0) * q.float() + _f16(blocks, 2)


def _k_scales(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """12 bytes -> 8 six-bit scales and 8 six-bit mins (sub-blocks 0-3 in bytes 0-7 low bits;
    4-7 in bytes 8-11's nibbles, their top two bits in bytes 0-7's top bits)."""
    a, b, c = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = torch.cat((a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)), dim=-1)
    mins = torch.cat((b & 0x3F, (c >> 4) | ((b >> 6) << 4)), dim=-1)
    return scales.float(), mins.float()


def _k_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """128 bytes -> 8 sub-blocks of 32: 32-byte group j gives sub-block 2j (low) and 2j+1 (high)."""
    groups = packed.reshape(-1, 4, 1, 32)
    return torch.cat((groups & 0x0F, groups >> 4), dim=2).reshape(-1, 8, 32)


def _k_combine(blocks: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    scales, mins = _k_scales(blocks[:, 4:16])
    d = (_f16(blocks, 0) * scales)[:, :, None]
    m = (_f16(blocks, 2) * mins)[:, :, None]
    return (d * q.float() - m).reshape(-1, 256)


def q4_k(blocks: torch.Tensor) -> torch.Tensor:
    return _k_combine(blocks, _k_nibbles(blocks[:, 16:144]))


def q5_k(blocks: torch.Tensor) -> torch.Tensor:
    # High bit of sub-block s is bit s of the high-bits byte at the value's position (0..31).
    bits = (blocks[:, 16:48, None] >> torch.arange(8, device=blocks.device, dtype=torch.uint8)) & 1
    return _k_combine(blocks, _k_nibbles(blocks[:, 48:176]) | (bits.permute(0, 2, 1) << 4))


def q6_k(blocks: torch.Tensor) -> torch.Tensor:
    # Two halves of 128 values; in each, chunk k of 32 takes low nibbles (k<2) or high nibbles
    # of the half's 64 low bytes and bits 2k..2k+1 of its 32 high-bit bytes.
    low = blocks[:, :128].reshape(-1, 2, 64)
    low = torch.cat((low & 0x0F, low >> 4), dim=-1)  # [n, 2, 128] in chunk order
    high = blocks[:, 128:192].reshape(-1, 2, 1, 32)
    shifts = torch.tensor([0, 2, 4, 6], device=blocks.device, dtype=torch.uint8).reshape(1, 1, 4, 1)
    high = ((high >> shifts) & 3).reshape(-1, 2, 128)
    q = (low | (high << 4)).reshape(-1, 256).float() - 32
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float().repeat_interleave(16, dim=-1)
    return _f16(blocks, 208) * scales * q


DEQUANTIZE: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    Q8_0: q8_0, Q4_0: q4_0, Q4_1: q4_1, Q5_0: q5_0, Q5_1: q5_1, Q4_K: q4_k, Q5_K: q5_k, Q6_K: q6_k,
}
SUPPORTED = tuple(PLAIN) + tuple(DEQUANTIZE)


def type_name(qtype: int) -> str:
    if qtype in TYPE_NAMES:
        return TYPE_NAMES[qtype]
    try:  # names of the types we do not decode, for error messages
        import gguf

        return gguf.GGMLQuantizationType(qtype).name
    except (ImportError, ValueError):
        return f"GGML type {qtype}"


def supported_names() -> str:
    return ", ".join(TYPE_NAMES[t] for t in SUPPORTED)


def row_bytes(qtype: int, columns: int) -> int:
    """Bytes of one row of ``columns`` values (``columns`` must be whole blocks)."""
    block, size = BLOCKS[qtype]
    return columns // block * size


def dequantize(raw: torch.Tensor, qtype: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Raw GGML bytes (uint8, any shape) of a tensor of logical ``shape`` -> ``dtype`` tensor."""
    if qtype in PLAIN:
        return raw.reshape(-1).view(PLAIN[qtype]).reshape(shape).to(dtype)
    _, size = BLOCKS[qtype]
    values = DEQUANTIZE[qtype](raw.reshape(-1, size))
    return values.reshape(shape).to(dtype)
