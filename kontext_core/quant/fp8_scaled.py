"""ComfyUI's fp8 single-file transformers (e.g. ``flux1-dev-kontext_fp8_scaled.safetensors``).

What such a file holds (ComfyUI's model detection and its scaled-fp8 linear ops): BFL key names
(often under ``model.diffusion_model.``), a marker tensor ``scaled_fp8`` whose dtype names the
fp8 format (float32 there means e4m3fn), Linear weights ``X.weight`` in float8 with a float32
scalar ``X.scale_weight`` (the layer's weight is ``weight · scale_weight``), optionally
``X.scale_input`` (used only by fp8 matmul kernels for the activations; the weight's value does not
depend on it, so it is read past), and everything else in bf16/fp16/fp32. Unscaled fp8 files
(``*_fp8_e4m3fn.safetensors``) are the same without the marker and scales (scale 1).

The weights stay float8 on the device (:class:`~kontext_core.quant.layers.CastLinear`), upcast
per layer when it runs.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..checkpoint.errors import CheckpointError
from ..checkpoint.layout import ComponentWeights
from ..checkpoint.safetensors_io import DTYPES
from ..checkpoint.stream import check_plan, identity_rules
from .layers import CastLinear, replace_module, set_tensor

MARKER = "scaled_fp8"
SCALE_SUFFIXES = (".scale_weight", ".scale_input")
FP8_NAMES = ("F8_E4M3", "F8_E5M2")


def is_fp8_checkpoint(weights: ComponentWeights) -> bool:
    infos = weights.tensors.infos
    return MARKER in infos or any(info.dtype in FP8_NAMES for info in infos.values())


class _WeightsOnly:
    """The source's tensors without the marker and scale tensors (for the key/shape checks)."""

    def __init__(self, source, keys: set[str]):
        self._source = source
        self.infos = {k: v for k, v in source.infos.items() if k in keys}

    def describe(self) -> str:
        return self._source.describe()


def _split(weights: ComponentWeights) -> tuple[set[str], dict[str, str]]:
    infos = weights.tensors.infos
    scales = {k[: -len(".scale_weight")]: k for k in infos if k.endswith(".scale_weight")}
    plain = {k for k in infos if k != MARKER and not k.endswith(SCALE_SUFFIXES)}
    for layer, key in scales.items():
        if f"{layer}.weight" not in infos:
            raise CheckpointError(f"{weights.tensors.describe()}: {key!r} scales no {layer}.weight: the file is "
                                  "not a scaled fp8 FLUX transformer")
        if infos[key].shape not in ((), (1,)):
            raise CheckpointError(f"{weights.tensors.describe()}: {key!r} has shape {infos[key].shape}; only "
                                  "per-tensor scales (a scalar) are supported")
    return plain, scales


def fill_from_fp8(module: nn.Module, weights: ComponentWeights, device: torch.device, dtype: torch.dtype,
                  summary: str) -> nn.Module:
    """Load an fp8 (scaled or not) BFL transformer into ``module`` (built on meta): fp8 Linear
    weights become :class:`CastLinear` (fp8 on ``device``, bias and scale beside), the rest ``dtype``."""
    plain, scales = _split(weights)
    check_plan(module, replace(weights, tensors=_WeightsOnly(weights.tensors, plain)), identity_rules(module),
               summary)
    infos = weights.tensors.infos
    linears = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    with weights.tensors.open() as read, torch.no_grad():
        for name in linears:
            if infos[f"{name}.weight"].dtype not in FP8_NAMES:
                continue
            linear = module.get_submodule(name)
            weight = read(f"{name}.weight").to(device)
            bias = read(f"{name}.bias").to(device=device, dtype=dtype) if linear.bias is not None else None
            scale = read(scales[name]).to(device=device, dtype=torch.float32).reshape(()) if name in scales else None
            replace_module(module, name, CastLinear(weight, bias, scale))
        for key, tensor in list(module.state_dict(keep_vars=True).items()):
            if tensor.is_meta:
                value = read(key)
                layer = key.rpartition(".")[0]
                if value.dtype in (DTYPES["F8_E4M3"], DTYPES["F8_E5M2"]) and layer in scales:
                    value = value.float() * read(scales[layer]).float()  # an fp8 tensor outside a Linear
                set_tensor(module, key, value.to(device=device, dtype=dtype))
    return module
