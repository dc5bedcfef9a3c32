"""Reading safetensors checkpoints one tensor at a time, with errors that name the file and key.

Headers are parsed directly (8-byte length + JSON) so that finding a model, inferring its shape
and fingerprinting it never touch tensor data; a truncated file is caught here, before loading.
Tensor bytes are read (``readinto``) straight into a fresh tensor, not memory-mapped: a loaded
model owns its memory (rewriting or truncating the file later cannot change or crash it) and the
process holds one copy of the weights, plus one tensor in flight when converting dtype or device.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from .errors import CheckpointError

MAX_HEADER_BYTES = 100_000_000
DTYPES = {  # safetensors dtype names (little-endian data)
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int = 0  # absolute byte offset of the data in the file
    nbytes: int = 0


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Key -> (file, dtype, shape) from a safetensors header; checks the file is complete."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: file is truncated ({size} bytes): not a complete safetensors file")
            header_len = int.from_bytes(head, "little")
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                raise CheckpointError(
                    f"{path}: file is truncated or not safetensors: header claims {header_len} bytes, "
                    f"file holds {size} bytes. Re-download the file."
                )
            header = json.loads(f.read(header_len))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e})") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: header is not valid safetensors JSON ({e}); is this a safetensors file?") from e
    header.pop("__metadata__", None)
    infos, data_end = {}, 0
    for key, meta in header.items():
        try:
            begin, end = (int(o) for o in meta["data_offsets"])
            info = TensorInfo(path, meta["dtype"], tuple(int(s) for s in meta["shape"]), 8 + header_len + begin,
                              end - begin)
        except (KeyError, TypeError, IndexError, ValueError) as e:
            raise CheckpointError(f"{path}: malformed header entry for key {key!r} ({e})") from e
        dtype = DTYPES.get(info.dtype)
        numel = math.prod(info.shape)
        if dtype is None or numel * dtype.itemsize != info.nbytes:
            raise CheckpointError(f"{path}: key {key!r}: dtype {info.dtype} and shape {info.shape} do not match its "
                                  f"{info.nbytes} bytes (unsupported dtype or corrupt header)")
        infos[key] = info
        data_end = max(data_end, end)
    if 8 + header_len + data_end > size:
        raise CheckpointError(
            f"{path}: file is truncated: its header needs {8 + header_len + data_end} bytes, the file holds "
            f"{size}. Re-download or re-save it."
        )
    return infos


class TensorSource:
    """The tensors of one model component across one or more safetensors files.

    ``index``: a Hugging Face ``*.safetensors.index.json`` (``weight_map`` key -> shard file).
    ``prefix``: stripped from every key; keys without it are ignored (e.g. ComfyUI's
    ``model.diffusion_model.`` in a file that also holds other models).
    """

    def __init__(self, files: Sequence[Path] = (), index: Path | None = None, prefix: str = ""):
        self.index = index
        self.prefix = prefix
        if index is not None:
            files = self._shards_from_index(index)
        self.files = tuple(files)
        self.infos: dict[str, TensorInfo] = {}
        for path in self.files:
            for key, info in read_header(path).items():
                if prefix and not key.startswith(prefix):
                    continue
                key = key[len(prefix):]
                if key in self.infos:
                    raise CheckpointError(f"key {key!r} is in both {self.infos[key].file} and {path}")
                self.infos[key] = info
        if index is not None:
            self._check_index(index)

    def _shards_from_index(self, index: Path) -> list[Path]:
        try:
            weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        except (OSError, KeyError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{index}: not a readable safetensors index with a 'weight_map' ({e})") from e
        self._weight_map = weight_map
        shards: dict[str, str] = {}
        for key, name in weight_map.items():
            shards.setdefault(name, key)
        paths = []
        for name, key in shards.items():
            path = index.parent / name
            if not path.is_file():
                raise CheckpointError(
                    f"{index}: shard {name} is missing (expected at {path}; it holds e.g. key {key!r}). "
                    "The download is incomplete: fetch the missing shard."
                )
            paths.append(path)
        return paths

    def _check_index(self, index: Path) -> None:
        for key, name in self._weight_map.items():
            key = key[len(self.prefix):] if self.prefix and key.startswith(self.prefix) else key
            info = self.infos.get(key)
            if info is None or info.file.name != name:
                raise CheckpointError(f"{index}: key {key!r} is listed in shard {name} but that shard does not hold it")

    def describe(self) -> str:
        if self.index is not None:
            return str(self.index)
        return ", ".join(str(f) for f in self.files)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.infos.items()}

    def all_files(self) -> list[Path]:
        return ([self.index] if self.index is not None else []) + list(self.files)

    @contextmanager
    def open(self) -> Iterator[Callable[[str], torch.Tensor]]:
        """A ``read(key) -> CPU tensor`` function over open files; each call reads one tensor."""
        with ExitStack() as stack:
            handles: dict[Path, BinaryIO] = {}

            def read(key: str) -> torch.Tensor:
                info = self.infos.get(key)
                if info is None:
                    raise CheckpointError(f"{self.describe()}: key {key!r} is missing")
                tensor = torch.empty(info.shape, dtype=DTYPES[info.dtype])
                if info.nbytes == 0:
                    return tensor
                try:
                    if info.file not in handles:
                        handles[info.file] = stack.enter_context(info.file.open("rb"))
                    f = handles[info.file]
                    f.seek(info.offset)
                    got = f.readinto(tensor.view(-1).view(torch.uint8).numpy())
                except OSError as e:
                    raise CheckpointError(f"{info.file}: cannot read key {key!r} ({e})") from e
                if got != info.nbytes:
                    raise CheckpointError(f"{info.file}: key {key!r}: read {got} of {info.nbytes} bytes: the file is "
                                          "truncated or was changed while loading")
                return tensor

            yield read


def read_state_dict(source: TensorSource) -> dict[str, torch.Tensor]:
    """Every tensor of ``source`` in host memory (tests and small models only)."""
    with source.open() as read:
        return {key: read(key) for key in source.infos}

