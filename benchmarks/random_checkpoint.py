"""A FLUX.1 Kontext checkpoint folder with random weights of a preset's shapes, written tensor by tensor.

``write_random_folder(root, preset, device)`` writes what ``kontext_core.loading.resolve_model``
reads as BFL single files: ``flux1-kontext-dev.safetensors`` (transformer) + ``ae.safetensors``
(autoencoder), both bf16, a ``kontext.json`` naming the preset's settings (a tiny preset's RoPE
axes and norm groups cannot be read from shapes) and empty text-encoder folders (the loader asks
for them; an editor loaded with ``text=False`` never reads them). ``write_gguf_folder`` adds a
GGUF copy of that transformer (Q8_0 or Q4_K, beside a hard link to the same ``ae.safetensors``).

Host memory stays bounded: the safetensors header is computed from the module's shapes on the
meta device first, then each tensor is drawn (on ``device``: a GPU draws 12B values in seconds),
copied to the host and appended, one at a time; the GGUF copy reads, encodes and appends the
same way. Nothing here is a real model: timings and memory are real, pixels are noise.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import gguf_encode
import numpy as np
import torch

from kontext_core.autoencoder import AutoEncoder
from kontext_core.checkpoint.layout import TEXT_FOLDERS
from kontext_core.checkpoint.safetensors_io import TensorSource
from kontext_core.config import Preset
from kontext_core.transformer import KontextTransformer

TRANSFORMER_FILE = "flux1-kontext-dev.safetensors"
AE_FILE = "ae.safetensors"
DISK_MARGIN = 1 << 30  # keep a GiB free for everything else on the machine


class DiskFullError(RuntimeError):
    """Not enough free disk for a file of the checkpoint (raised before writing it)."""


def module_shapes(module_cls: type, config) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every state-dict entry, in order, without allocating any weight."""
    with torch.device("meta"):
        module = module_cls(config)
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def random_tensor(key: str, shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    """A bf16 tensor for ``key``: 1/sqrt(fan-in) normals for weights, ones for norm scales, zeros for
    biases, so activations stay finite through the blocks (the timings do not depend on values)."""
    if len(shape) == 1 and (key.endswith(".scale") or "norm" in key) and key.endswith(("scale", "weight")):
        return torch.ones(shape, dtype=torch.bfloat16, device=device)
    if len(shape) == 1 and key.endswith(".bias"):
        return torch.zeros(shape, dtype=torch.bfloat16, device=device)
    gen = torch.Generator(device).manual_seed(seed)
    std = 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) > 1 else 0.02
    return (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std).to(torch.bfloat16)


def _check_disk(folder: Path, nbytes: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < nbytes + DISK_MARGIN:
        raise DiskFullError(f"{what} needs {nbytes / 2**30:.1f} GiB but {folder} has {free / 2**30:.1f} GiB free "
                            f"(keeping 1 GiB): free disk space or pass --workdir on a larger disk")


def write_safetensors_streamed(path: Path, entries: list[tuple[str, tuple[int, ...]]],
                               produce: Callable[[int, str, tuple[int, ...]], torch.Tensor]) -> int:
    """Write a bf16 safetensors file one tensor at a time; ``produce(i, key, shape)`` gives each
    tensor (any device). Returns the bytes written."""
    header, offset = {}, 0
    for key, shape in entries:
        nbytes = math.prod(shape) * 2
        header[key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header["__metadata__"] = {"format": "pt", "note": "random weights (benchmarks/random_checkpoint.py)"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as safetensors writes it
    _check_disk(path.parent, 8 + len(blob) + offset, str(path.name))
    with path.open("wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for i, (key, shape) in enumerate(entries):
            tensor = produce(i, key, shape).to(torch.bfloat16).contiguous().cpu()
            if tuple(tensor.shape) != shape:
                raise ValueError(f"{key}: produced shape {tuple(tensor.shape)}, header says {shape}")
            f.write(tensor.view(-1).view(torch.uint8).numpy())
    return path.stat().st_size


def _sidecar(preset: Preset) -> dict:
    d = preset.to_dict()
    return {"name": f"{preset.name}-random", "description": "random weights of the published shapes (benchmark)",
            **{k: d[k] for k in ("transformer", "autoencoder", "text", "sampler", "resolution")}}


def _folder_frame(root: Path, sidecar: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name in TEXT_FOLDERS:  # the loader wants them there; text=False never reads them
        (root / name).mkdir(exist_ok=True)
    (root / "kontext.json").write_text(json.dumps(sidecar, indent=1))


def write_random_folder(root: Path, preset: Preset, device: torch.device, seed: int = 0) -> Path:
    """The BFL single-file folder of ``preset``'s transformer and autoencoder, random bf16."""
    _folder_frame(root, _sidecar(preset))
    for name, cls, config, base in ((TRANSFORMER_FILE, KontextTransformer, preset.transformer, seed * 1_000_003),
                                    (AE_FILE, AutoEncoder, preset.autoencoder, seed * 1_000_003 + 500_000)):
        entries = module_shapes(cls, config)
        write_safetensors_streamed(root / name, entries,
                                   lambda i, key, shape, base=base: random_tensor(key, shape, base + i, device))
    return root


def _tensors(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    source = TensorSource([folder / TRANSFORMER_FILE])
    with source.open() as read:
        for key in source.infos:
            yield key, read(key)


def _gguf_entry(shape: tuple[int, ...], qtype: int, key: str) -> tuple[tuple[int, ...], int]:
    """(byte shape, GGML type) of a tensor in the GGUF copy."""
    if key.endswith(".weight") and gguf_encode.quantizable(shape, qtype):
        return (shape[0], gguf_encode.row_bytes(qtype, shape[1])), qtype
    return (*shape[:-1], shape[-1] * 2), gguf_encode.BF16


def write_gguf_folder(source: Path, root: Path, qtype_name: str, device: torch.device) -> Path:
    """``root`` with a ``qtype_name`` GGUF copy of ``source``'s random transformer, its
    ``ae.safetensors`` (hard link where the disk allows) and the same kontext.json."""
    import gguf

    qtype = gguf_encode.NAMES[qtype_name]
    _folder_frame(root, json.loads((source / "kontext.json").read_text()))
    ae = root / AE_FILE
    if not ae.exists():
        try:
            os.link(source / AE_FILE, ae)
        except OSError:
            shutil.copyfile(source / AE_FILE, ae)
    path = root / f"flux1-kontext-dev-{qtype_name}.gguf"
    shapes = TensorSource([source / TRANSFORMER_FILE]).shapes()
    writer = gguf.GGUFWriter(str(path), "flux")
    total = 0
    for key, shape in shapes.items():
        byte_shape, kind = _gguf_entry(shape, qtype, key)
        nbytes = math.prod(byte_shape)
        total += nbytes
        writer.add_tensor_info(key, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=gguf.GGMLQuantizationType(kind))
    _check_disk(root, total, path.name)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for key, tensor in _tensors(source):
        _, kind = _gguf_entry(tuple(tensor.shape), qtype, key)
        if kind == gguf_encode.BF16:
            data = tensor.contiguous().view(torch.uint8)
        else:
            data = gguf_encode.encode(tensor.to(device), qtype).cpu()
        writer.write_tensor_data(data.numpy())
    writer.close()
    return root
