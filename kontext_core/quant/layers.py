"""Linears whose weights stay compact in memory and are widened per layer, per call.

- :class:`GGUFLinear`: the GGML bytes of a GGUF file, dequantized to the compute dtype in forward.
- :class:`CastLinear`: float8 storage (``weight`` and ``bias``), upcast in forward; with a
  ``scale`` (ComfyUI's scaled fp8 files: ``weight ≈ fp8 · scale_weight``) or without one (our fp8
  plan: a plain cast, the same numbers as diffusers' ``enable_layerwise_casting``).

Neither subclasses ``nn.Linear``: code that rewrites ``nn.Linear`` layers (the fp8 speed path)
must not mistake compact storage for compute-dtype weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import ggml


class GGUFLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, qtype: int, raw: torch.Tensor,
                 bias: torch.Tensor | None):
        super().__init__()
        self.in_features, self.out_features, self.qtype = in_features, out_features, qtype
        self.register_buffer("qweight", raw)
        self.register_buffer("bias", bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, {ggml.type_name(self.qtype)}"

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        return ggml.dequantize(self.qweight, self.qtype, (self.out_features, self.in_features), dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)


class CastLinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, scale: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.register_buffer("scale", scale)  # float32 scalar or None

    def extra_repr(self) -> str:
        scaled = "scaled" if self.scale is not None else "unscaled"
        return f"in_features={self.in_features}, out_features={self.out_features}, {self.weight.dtype}, {scaled}"

    def upcast_weight(self, dtype: torch.dtype) -> torch.Tensor:
        w = self.weight.to(dtype)
        return w if self.scale is None else w * self.scale.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.upcast_weight(x.dtype), bias)


# Linears kept in the compute dtype by the fp8 plan: the modulation linears (their output scales
# every token) and the final projection (writes the velocity). The same set diffusers' layerwise
# casting skips by default on FluxTransformer2DModel ("norm*" and "^proj_out$" patterns).
KEPT_PARTS = ("img_mod", "txt_mod", "modulation", "adaLN_modulation")
KEPT_NAMES = ("final_layer.linear",)


def castable_linears(transformer: nn.Module) -> list[str]:
    """Names of the transformer's nn.Linear layers that the fp8 storage plan stores in fp8."""
    names = []
    for name, module in transformer.named_modules():
        if not isinstance(module, nn.Linear) or name in KEPT_NAMES:
            continue
        if not any(part in KEPT_PARTS for part in name.split(".")):
            names.append(name)
    return names


def set_tensor(module: nn.Module, key: str, value: torch.Tensor) -> None:
    """Put ``value`` at the state-dict ``key`` of ``module`` (a frozen parameter where one is
    declared, else a buffer): how loaders fill a model built on the meta device."""
    owner_name, _, name = key.rpartition(".")
    owner = module.get_submodule(owner_name)
    if name in owner._parameters:
        owner._parameters[name] = nn.Parameter(value, requires_grad=False)
    else:
        owner._buffers[name] = value


def replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, child, new)


def cast_to_fp8(transformer: nn.Module, dtype: torch.dtype = torch.float8_e4m3fn) -> int:
    """Store the castable linears' weights and biases in ``dtype`` (a plain cast), in place.
    Returns the number of layers converted."""
    names = castable_linears(transformer)
    for name in names:
        linear = transformer.get_submodule(name)
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        replace_module(transformer, name, CastLinear(linear.weight.detach().to(dtype), bias))
    return len(names)
