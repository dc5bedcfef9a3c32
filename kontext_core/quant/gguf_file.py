"""GGUF transformer files (as users download them, e.g. ``flux1-kontext-dev-Q4_K_M.gguf``).

Read with the ``gguf`` package's reader. Facts of the published FLUX GGUF conversions that this
relies on: tensor names are BFL's (``double_blocks.0.img_attn.qkv.weight``; a
``model.diffusion_model.`` prefix is stripped like in BFL safetensors), GGML dims are listed
innermost first (so the torch shape is the reverse), 2-D weights are block-quantized along their
rows, 1-D tensors (biases, norm scales) are kept in F32/F16/BF16.

:class:`GGUFSource` offers the interface of ``checkpoint.safetensors_io.TensorSource`` (infos,
shapes, describe, all_files, open), so layout detection, shape inference, key checks and the
fingerprint treat a GGUF file like any BFL checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from ..checkpoint.errors import CheckpointError
from ..checkpoint.layout import BFL_PREFIXES, ComponentWeights
from ..checkpoint.safetensors_io import TensorInfo
from ..checkpoint.stream import check_plan, identity_rules
from . import ggml
from .layers import GGUFLinear, replace_module, set_tensor

TRANSFORMER_KEY = "img_in.weight"


class GGUFSource:
    """The tensors of one GGUF file; ``infos[key].dtype`` is the GGML type name (``Q4_K``, ``F32``)."""

    def __init__(self, path: Path):
        self.path = path
        self.files = (path,)
        self.index = None
        reader = _reader(path)
        self.architecture = _architecture(reader)
        names = [t.name for t in reader.tensors]
        self.prefix = next((p for p in BFL_PREFIXES if any(n.startswith(p) for n in names)), "")
        self.infos: dict[str, TensorInfo] = {}
        self.qtypes: dict[str, int] = {}
        for t in reader.tensors:
            if self.prefix and not t.name.startswith(self.prefix):
                continue
            key = t.name[len(self.prefix):]
            qtype = int(t.tensor_type)
            shape = tuple(int(s) for s in reversed(t.shape.tolist()))
            self.infos[key] = TensorInfo(path, ggml.type_name(qtype), shape, int(t.data_offset), int(t.n_bytes))
            self.qtypes[key] = qtype
        self._check()

    def _check(self) -> None:
        if TRANSFORMER_KEY not in self.infos:
            sample = ", ".join(list(self.infos)[:3]) or "no tensors"
            raise CheckpointError(
                f"{self.path}: not a FLUX.1 Kontext transformer GGUF (architecture {self.architecture!r}; no "
                f"{TRANSFORMER_KEY!r} tensor, found e.g. {sample}). Pass the GGUF of the Kontext transformer "
                "(e.g. flux1-kontext-dev-Q8_0.gguf); text encoders and the autoencoder are read from their own "
                "folders/files beside it")
        unsupported = sorted({(ggml.type_name(q), k) for k, q in self.qtypes.items() if q not in ggml.SUPPORTED})
        if unsupported:
            kinds = ", ".join(sorted({name for name, _ in unsupported}))
            raise CheckpointError(
                f"{self.path}: quantization type {kinds} (e.g. tensor {unsupported[0][1]!r}) is not supported; "
                f"supported: {ggml.supported_names()}. Download the file in one of those types (Q8_0, Q6_K, Q5_K "
                "and Q4_K are published for FLUX.1 Kontext)")

    def describe(self) -> str:
        return str(self.path)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: v.shape for k, v in self.infos.items()}

    def all_files(self) -> list[Path]:
        return [self.path]

    @contextmanager
    def open(self) -> Iterator[Callable[[str], torch.Tensor]]:
        """``read(key)`` -> the tensor's raw bytes as uint8 (GGML blocks, or the plain values' bytes)."""
        with self.path.open("rb") as f:
            def read(key: str) -> torch.Tensor:
                info = self.infos.get(key)
                if info is None:
                    raise CheckpointError(f"{self.path}: key {key!r} is missing")
                raw = torch.empty(info.nbytes, dtype=torch.uint8)
                f.seek(info.offset)
                if f.readinto(raw.numpy()) != info.nbytes:
                    raise CheckpointError(f"{self.path}: key {key!r}: the file is truncated; re-download it")
                return raw
            yield read


def _reader(path: Path):
    import gguf  # users' GGUF files only; the package is a dependency (pyproject)

    try:
        return gguf.GGUFReader(str(path))
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise CheckpointError(f"{path}: not a readable GGUF file ({e}); is it complete? Re-download it") from e


def _architecture(reader) -> str:
    field = reader.fields.get("general.architecture")
    try:
        return str(field.contents()) if field is not None else "unknown"
    except (ValueError, IndexError, TypeError):
        return "unknown"


def gguf_transformer_file(path: Path) -> ComponentWeights:
    return ComponentWeights("transformer", "gguf", GGUFSource(path))  # type: ignore[arg-type]


def fill_from_gguf(module: nn.Module, weights: ComponentWeights, device: torch.device, dtype: torch.dtype,
                   summary: str) -> nn.Module:
    """Load a GGUF transformer into ``module`` (built on meta): quantized Linear weights become
    :class:`GGUFLinear` layers holding the file's bytes on ``device``; every other tensor is
    converted to ``dtype``."""
    source: GGUFSource = weights.tensors  # type: ignore[assignment]
    check_plan(module, weights, identity_rules(module), summary)
    linears = {name for name, m in module.named_modules() if isinstance(m, nn.Linear)}
    with source.open() as read, torch.no_grad():
        for name in sorted(linears):
            qtype = source.qtypes[f"{name}.weight"]
            if qtype in ggml.PLAIN:
                continue
            linear = module.get_submodule(name)
            info = source.infos[f"{name}.weight"]
            if info.nbytes != info.shape[0] * ggml.row_bytes(qtype, info.shape[1]):
                raise CheckpointError(f"{source.path}: tensor {name}.weight: {info.nbytes} bytes do not hold "
                                      f"{info.shape} in {info.dtype}: the file is corrupt")
            raw = read(f"{name}.weight").reshape(info.shape[0], -1).to(device)
            bias = None
            if linear.bias is not None:
                key = f"{name}.bias"
                bias = ggml.dequantize(read(key).to(device), source.qtypes[key], source.infos[key].shape, dtype)
            replace_module(module, name, GGUFLinear(linear.in_features, linear.out_features, qtype, raw, bias))
        for key, tensor in list(module.state_dict(keep_vars=True).items()):
            if tensor.is_meta:
                value = ggml.dequantize(read(key).to(device), source.qtypes[key], source.infos[key].shape, dtype)
                set_tensor(module, key, value)
    return module
