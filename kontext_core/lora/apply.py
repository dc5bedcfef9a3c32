"""Applying adapter sets to a resident KontextTransformer and switching between them.

Two modes, both switchable without reloading the base model:
- ``unfused`` (default): each adapted Linear gets a forward hook adding ``up @ (down @ x)``, a
  separate low-rank path; the base weights are never written, so removing the set restores the
  base bit for bit. Works on any layer that maps x to its output rows: plain, fp8 (``Fp8Linear``)
  and quantized (GGUF) layers alike. With ``torch.compile`` a new set recompiles the blocks.
- ``fused``: ``W += up @ down`` (in float32, cast back) into plain Linear weights; no extra work per
  step. The original rows are kept on the CPU and copied back on removal (bit-exact). Refused on
  layers without plain float weights (fp8, GGUF): use unfused there.

Adapters are ordered by (fingerprint, scale) before they are summed, so a set's pixels and its
cache key do not depend on the order it was written in.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.tables import Op, transformer_rules
from ..config import TransformerConfig
from .adapter import LoraAdapter, LoraPiece
from .errors import BAD_MODE, MISMATCH, LoraError
from .spec import check_scale

MODES = ("unfused", "fused")
# Bump when a change here changes pixels of LoRA edits (part of the cache key's LoRA entry).
LORA_VERSION = 1
_STATE = "_kontext_lora_state"  # plain attribute on the transformer (not a submodule: state_dict unchanged)

LoraSet = Sequence[tuple[LoraAdapter, float]]


def canonical(loras: LoraSet) -> tuple[tuple[LoraAdapter, float], ...]:
    """Scales checked, adapters ordered by (fingerprint, scale)."""
    checked = [(adapter, check_scale(scale, adapter.path)) for adapter, scale in loras]
    return tuple(sorted(checked, key=lambda pair: (pair[0].fingerprint, pair[1])))


def lora_key(loras: LoraSet, mode: str = "unfused") -> dict | None:
    """The adapters' part of a cache key (file hashes, scales, mode, version); None when there are
    none, so runs without LoRA keep their keys."""
    entries = [{"sha256": a.fingerprint, "scale": s} for a, s in canonical(loras)]
    if not entries:
        return None
    return {"version": LORA_VERSION, "mode": _check_mode(mode), "adapters": entries}


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"LoRA mode {mode!r} is not one of {', '.join(MODES)}")
    return mode


@dataclass
class _Placement:
    piece: LoraPiece
    scale: float  # user scale × format scale
    start: int  # first row of the target's output
    adapter: LoraAdapter


@dataclass
class _Layer:
    """The summed update of one module: ΔW = up @ down (scales folded into up), Δb = bias."""

    up: torch.Tensor  # [out, R]
    down: torch.Tensor  # [R, in]
    bias: torch.Tensor | None  # [out]


@dataclass
class _State:
    key: tuple
    handles: list = field(default_factory=list)
    originals: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=dict)


def _features(module: nn.Module) -> tuple[int, int]:
    if hasattr(module, "in_features") and hasattr(module, "out_features"):
        return int(module.in_features), int(module.out_features)
    weight = getattr(module, "weight", None)
    if weight is None or weight.ndim != 2:
        raise TypeError(f"{type(module).__name__} is not a linear layer")
    return int(weight.shape[1]), int(weight.shape[0])


def _mismatch(adapter: LoraAdapter, reason: str) -> LoraError:
    return LoraError(adapter.path, f"is for another model: {reason}",
                     "use a LoRA trained for this model (same FLUX variant and size)", MISMATCH)


def _placements(transformer: nn.Module, loras: LoraSet) -> list[_Placement]:
    """Every piece checked against the model: its layer exists, inputs and rows match."""
    rules = {r.native: r for r in transformer_rules(transformer.config)}
    out = []
    for adapter, scale in canonical(loras):
        for piece in adapter.pieces:
            try:
                module = transformer.get_submodule(piece.module)
                in_features, out_features = _features(module)
            except (AttributeError, TypeError):
                raise _mismatch(adapter, f"this model has no layer {piece.module!r}") from None
            start, rows = _rows(rules.get(piece.module + ".weight"), piece.segments, out_features)
            where = piece.module + ("" if piece.segments is None else f" rows {start}:{start + rows}")
            if piece.down.shape[1] != in_features or piece.up.shape[0] != rows:
                raise _mismatch(adapter, f"layer {where} takes {in_features} inputs to {rows} outputs; the LoRA's "
                                f"factors are {tuple(piece.up.shape)} @ {tuple(piece.down.shape)}")
            out.append(_Placement(piece, scale * piece.scale, start, adapter))
    return out


def _rows(rule, segments: tuple[int, ...] | None, out_features: int) -> tuple[int, int]:
    if segments is None:
        return 0, out_features
    sizes = rule.sizes if rule is not None and rule.op is Op.CONCAT else (out_features,)
    if max(segments) >= len(sizes):
        return 0, -1  # reported as a shape mismatch
    return sum(sizes[: segments[0]]), sum(sizes[s] for s in segments)


def check_loras(loras: LoraSet, config: TransformerConfig) -> None:
    """Raise LoraError if an adapter does not fit a model of this shape (no weights are built:
    the driver can check before any work)."""
    from ..transformer import KontextTransformer

    with torch.device("meta"):
        model = KontextTransformer(config)
    _placements(model, loras)


def _merge(transformer: nn.Module, placements: list[_Placement], dtype: torch.dtype) -> dict[str, _Layer]:
    by_module: dict[str, list[_Placement]] = {}
    for p in placements:
        by_module.setdefault(p.piece.module, []).append(p)
    layers = {}
    for name, group in by_module.items():
        in_features, out_features = _features(transformer.get_submodule(name))
        device = _device(transformer.get_submodule(name))
        rank = sum(p.piece.rank for p in group)
        up = torch.zeros(out_features, rank, dtype=torch.float32)
        down = torch.empty(rank, in_features, dtype=torch.float32)
        bias = None
        col = 0
        for p in group:
            piece, rows = p.piece, p.piece.up.shape[0]
            up[p.start : p.start + rows, col : col + piece.rank] = piece.up.float() * p.scale
            down[col : col + piece.rank] = piece.down.float()
            delta_b = _bias_delta(piece, p.scale)
            if delta_b is not None:
                bias = torch.zeros(out_features) if bias is None else bias
                bias[p.start : p.start + rows] += delta_b
            col += piece.rank
        layers[name] = _Layer(up.to(device, dtype), down.to(device, dtype),
                              None if bias is None else bias.to(device, dtype))
    return layers


def _bias_delta(piece: LoraPiece, scale: float) -> torch.Tensor | None:
    delta = None
    if piece.down_bias is not None:
        delta = piece.up.float() @ piece.down_bias.float()
    if piece.up_bias is not None:
        delta = piece.up_bias.float() if delta is None else delta + piece.up_bias.float()
    return None if delta is None else delta * scale


def _device(module: nn.Module) -> torch.device:
    for t in (*module.parameters(), *module.buffers()):
        return t.device
    return torch.device("cpu")


def _compute_dtype(transformer: nn.Module) -> torch.dtype:
    """The dtype activations flow in: the first floating, non-fp8 parameter's."""
    for p in transformer.parameters():
        if p.is_floating_point() and p.element_size() > 1:
            return p.dtype
    return torch.float32


def _hook(layer: _Layer):
    # Copies per (device, dtype) of the input: offloading plans move blocks between devices.
    copies = {(layer.down.device, layer.down.dtype): (layer.down, layer.up, layer.bias)}

    def add_low_rank(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        where = (x.device, x.dtype)
        if where not in copies:
            copies[where] = tuple(None if t is None else t.to(*where) for t in (layer.down, layer.up, layer.bias))
        down, up, bias = copies[where]
        return output + F.linear(F.linear(x, down), up, bias)

    return add_low_rank


def _check_fusable(transformer: nn.Module, layers: dict[str, _Layer], placements: list[_Placement]) -> None:
    for name, layer in layers.items():
        module = transformer.get_submodule(name)
        weight = getattr(module, "weight", None)
        plain = isinstance(module, nn.Linear) and weight is not None and weight.element_size() > 1
        adapter = next(p.adapter for p in placements if p.piece.module == name)
        if not plain:
            kind = type(module).__name__ if not isinstance(module, nn.Linear) else f"{weight.dtype} weights"
            raise LoraError(adapter.path, f"cannot be fused into layer {name} ({kind}): fused mode needs plain "
                            "float weights", "use the unfused LoRA mode with fp8/GGUF weights", BAD_MODE)
        if layer.bias is not None and module.bias is None:
            raise LoraError(adapter.path, f"adds a bias to layer {name}, which has none: it cannot be fused",
                            "use the unfused LoRA mode", BAD_MODE)


def _fuse(transformer: nn.Module, layers: dict[str, _Layer], state: _State) -> None:
    with torch.no_grad():
        for name, layer in layers.items():
            module = transformer.get_submodule(name)
            w, b = module.weight, module.bias
            state.originals[name] = (w.detach().to("cpu", copy=True),
                                     None if layer.bias is None else b.detach().to("cpu", copy=True))
            w.copy_((w.float() + layer.up.float() @ layer.down.float()).to(w.dtype))
            if layer.bias is not None:
                b.copy_((b.float() + layer.bias.float()).to(b.dtype))


def active_loras(transformer: nn.Module) -> tuple:
    """Key of the applied set: ((fingerprint, scale), ...) and the mode; () when none."""
    state = getattr(transformer, _STATE, None)
    return state.key if state is not None else ()


def clear_loras(transformer: nn.Module) -> None:
    """Back to the base model: hooks removed, fused weights restored bit for bit."""
    state: _State | None = getattr(transformer, _STATE, None)
    if state is None:
        return
    for handle in state.handles:
        handle.remove()
    with torch.no_grad():
        for name, (weight, bias) in state.originals.items():
            module = transformer.get_submodule(name)
            module.weight.copy_(weight)
            if bias is not None:
                module.bias.copy_(bias)
    delattr(transformer, _STATE)


def set_loras(transformer: nn.Module, loras: LoraSet, mode: str = "unfused") -> bool:
    """Make ``loras`` ([(adapter, scale), ...]) the transformer's adapter set; [] = the base model.

    A no-op (returns False) when that set is already applied; otherwise the current set is removed
    first. Everything is checked before the model is touched: a LoraError leaves it as it was."""
    _check_mode(mode)
    ordered = canonical(loras)
    key = (tuple((a.fingerprint, s) for a, s in ordered), mode) if ordered else ()
    if key == active_loras(transformer):
        return False
    placements = _placements(transformer, ordered)
    layers = _merge(transformer, placements, _compute_dtype(transformer))
    if mode == "fused":
        _check_fusable(transformer, layers, placements)
    clear_loras(transformer)
    if not ordered:
        return True
    state = _State(key)
    if mode == "fused":
        _fuse(transformer, layers, state)
    else:
        state.handles = [transformer.get_submodule(n).register_forward_hook(_hook(layer)) for n, layer in layers.items()]
    setattr(transformer, _STATE, state)
    return True


@contextmanager
def apply_loras(transformer: nn.Module, loras: LoraSet, mode: str = "unfused") -> Iterator[None]:
    """``with apply_loras(editor.transformer, [(adapter, 0.8)]): editor.edit(...)``; the previous
    set (usually none) is back afterwards."""
    previous = getattr(transformer, _STATE, None)
    set_loras(transformer, loras, mode)
    try:
        yield
    finally:
        if previous is None:
            clear_loras(transformer)
        elif active_loras(transformer) != previous.key:
            raise RuntimeError("apply_loras cannot restore a set it did not apply; use set_loras to switch")
