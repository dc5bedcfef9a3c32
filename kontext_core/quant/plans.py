"""Weight storage plans for a device's memory, and the byte accounting behind them.

A plan is (storage, offload):
- storage ``native``: weights in the compute dtype (or as the file stores them: GGUF, fp8);
  ``fp8``: the transformer's linears (all but modulation and final projection) stored float8
  e4m3 and upcast per layer when they run. Storage changes pixels: it belongs in the cache key.
- offload ``none``: everything resident on the device; ``model``: one component (T5, CLIP,
  autoencoder encoder/decoder, transformer) on the device at a time, moved in per phase;
  ``partial``: all resident but the transformer's last blocks, as few as the device needs,
  which are streamed in one block ahead of use each step (so a 24 GB card runs bf16 exactly);
  ``group``: the transformer's and T5's blocks live in host memory and are streamed in one
  block ahead of use (a CUDA side stream), the rest model-offloaded. Offload moves bytes, it does
  not change them: it is not in the cache key.

``--memory auto|80GB|24GB|16GB|12GB`` picks the first plan of :data:`AUTO_ORDER` whose predicted
peak fits (exact pixels first, then fewer transfers; the bf16 partial plan only while it streams
at most :data:`AUTO_MAX_STREAMED` of the transformer, else fp8's half-size storage comes first). Predictions are weights (from the model's
shapes) plus activations at the working size plus a fixed CUDA context allowance, against
:data:`USABLE` of the device's memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import Preset
from ..transformer import KontextTransformer
from .layers import castable_linears

GIB = 1024 ** 3
USABLE = 0.9  # the allocator's fragmentation and other processes' share
CUDA_CONTEXT = 1 * GIB  # context, cuBLAS/cuDNN workspaces
# Published FLUX.1 Kontext text encoders (when no text folder is there to count): T5-XXL
# encoder and CLIP-L text model parameters.
T5_XXL_PARAMS = 4_762_310_656
CLIP_L_PARAMS = 123_060_480


@dataclass(frozen=True)
class MemoryPlan:
    name: str
    storage: str  # "native" | "fp8"
    offload: str  # "none" | "model" | "partial" | "group"

    def key_settings(self) -> dict[str, str]:
        """What of the plan changes pixels (for the cache key): the storage only."""
        return {"storage": self.storage}

    def describe(self) -> str:
        storage = "weights in the compute dtype" if self.storage == "native" else "fp8 e4m3 storage, per-layer upcast"
        offload = {"none": "all resident", "model": "components offloaded between phases",
                   "partial": "the transformer's last blocks streamed from host memory, as few as fit",
                   "group": "transformer/T5 blocks streamed from host memory"}[self.offload]
        return f"{self.name} ({storage}; {offload})"


PLANS = {p.name: p for p in (
    MemoryPlan("resident", "native", "none"),
    MemoryPlan("model-offload", "native", "model"),
    MemoryPlan("fp8", "fp8", "none"),
    MemoryPlan("fp8-model-offload", "fp8", "model"),
    MemoryPlan("partial-offload", "native", "partial"),
    MemoryPlan("fp8-partial-offload", "fp8", "partial"),
    MemoryPlan("group-offload", "native", "group"),
    MemoryPlan("fp8-group-offload", "fp8", "group"),
)}
AUTO_ORDER = ("resident", "model-offload", "partial-offload", "fp8", "fp8-model-offload", "fp8-partial-offload",
              "fp8-group-offload")
# ``auto`` takes the bf16 partial plan only while it streams at most this share of the
# transformer's bytes per step; past that the fp8 plans (half the bytes) come first. A guess until
# measured.
AUTO_MAX_STREAMED = 0.5


class PlanError(ValueError):
    """A plan that cannot fit the device, or an unknown plan/memory value (before any loading)."""


@dataclass
class Estimate:
    plan: MemoryPlan
    components: dict[str, int]  # bytes stored per component (transformer, t5, clip, autoencoder)
    peak_device_bytes: int
    parts: dict[str, int] = field(default_factory=dict)  # what the peak is made of
    streamed_blocks: int = 0  # transformer blocks streamed from host memory (the last ones)
    streamed_bytes: int = 0  # their bytes: copied to the device once per sampling step

    def fits(self, device_bytes: int) -> bool:
        return self.peak_device_bytes <= USABLE * device_bytes


def parse_memory(memory: str) -> int | None:
    """``auto`` -> None (ask the device), ``24GB`` / ``24GiB`` / ``24`` -> bytes (GiB)."""
    if memory == "auto":
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(GB|GiB|G)?\s*", memory, re.IGNORECASE)
    if not m:
        raise PlanError(f"memory {memory!r} is not understood: use auto or a size such as 80GB, 24GB, 16GB, 12GB")
    return int(float(m.group(1)) * GIB)


def device_memory(device: torch.device) -> int | None:
    """Total memory of a CUDA device; None elsewhere (the CPU: no limit is assumed)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory
    return None


def _transformer_bytes(preset: Preset, itemsize: int, storage: str,
                       compact: Mapping[str, int] | None = None) -> tuple[int, list[int], int]:
    """(total, each block in run order (double then single), outside the blocks) bytes of the
    transformer under ``storage``.
    ``compact``: Linear name -> bytes its weight keeps as the file stores it (GGUF blocks, fp8);
    those layers stay as loaded, whatever the storage plan."""
    with torch.device("meta"):
        model = KontextTransformer(preset.transformer)
    linears = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    compact = {name: n for name, n in (compact or {}).items() if name in linears}
    fp8 = set(castable_linears(model)) - set(compact) if storage == "fp8" else set()

    def size(module: nn.Module, prefix: str) -> int:
        total = 0
        for name, p in module.named_parameters():
            owner, _, leaf = (prefix + name).rpartition(".")
            if owner in compact and leaf == "weight":
                total += compact[owner]
            else:
                total += p.numel() * (1 if owner in fp8 else itemsize)
        return total

    blocks = [size(b, f"double_blocks.{i}.") for i, b in enumerate(model.double_blocks)]
    blocks += [size(b, f"single_blocks.{i}.") for i, b in enumerate(model.single_blocks)]
    total = size(model, "")
    return total, blocks, total - sum(blocks)


def _activation_bytes(preset: Preset, itemsize: int, size: tuple[int, int], batch: int) -> int:
    """Largest live activations: a block's fused projection output (text + target + context
    tokens) a few times over, or the autoencoder decoder's full-resolution feature maps."""
    c = preset.transformer
    ppt = preset.pixels_per_token
    tokens = 2 * (size[0] // ppt) * (size[1] // ppt) + preset.text.t5_max_length
    transformer = 4 * batch * tokens * (3 * c.hidden_size + c.mlp_hidden) * itemsize
    a = preset.autoencoder
    decoder = 6 * batch * a.ch * a.ch_mult[0] * size[0] * size[1] * itemsize
    return max(transformer, decoder)


def estimate(plan: MemoryPlan, preset: Preset, dtype: torch.dtype, text_params: tuple[int, int],
             size: tuple[int, int] = (1024, 1024), batch: int = 1, cuda: bool = True,
             compact: Mapping[str, int] | None = None, device_bytes: int | None = None) -> Estimate:
    """Predicted bytes of ``plan`` for ``preset`` at ``size``; ``text_params`` = (T5, CLIP) counts;
    ``compact``: the transformer file's compactly stored Linear weights (see ``_transformer_bytes``).
    ``device_bytes``: the device's memory, which a partial plan streams just enough blocks to fit
    (none when it is not known: nothing to fit)."""
    itemsize = torch.empty(0, dtype=dtype).element_size()
    tf_total, tf_blocks, tf_rest = _transformer_bytes(preset, itemsize, plan.storage, compact)
    tf_block = max(tf_blocks, default=0)
    with torch.device("meta"):
        from ..autoencoder import AutoEncoder

        ae = sum(p.numel() for p in AutoEncoder(preset.autoencoder).parameters()) * itemsize
    t5, clip = (n * itemsize for n in text_params)
    components = {"transformer": tf_total, "t5": t5, "clip": clip, "autoencoder": ae}
    activations = _activation_bytes(preset, itemsize, size, batch)
    context = CUDA_CONTEXT if cuda else 0
    streamed = 0
    if plan.offload == "none":
        weights = sum(components.values())
    elif plan.offload == "model":
        weights = max(components.values())
    elif plan.offload == "partial":
        budget = None if device_bytes is None else USABLE * device_bytes - activations - context
        streamed, weights = _partial(sum(components.values()), tf_blocks, budget)
    else:  # streamed blocks: two in flight (running + prefetched); T5 blocks are ~1/24 of it
        weights = max(tf_rest + 2 * tf_block, t5 // 12, clip, ae)
        streamed = len(tf_blocks)
    parts = {"weights": weights, "activations": activations, "cuda_context": context}
    return Estimate(plan, components, sum(parts.values()), parts, streamed_blocks=streamed,
                    streamed_bytes=sum(tf_blocks[len(tf_blocks) - streamed:]) if streamed else 0)


def _partial(resident: int, blocks: list[int], budget: float | None) -> tuple[int, int]:
    """(blocks streamed from the end, weight bytes on the device) for a partial plan: the fewest
    last blocks whose streaming (two in flight) brings everything else within ``budget``; all of
    them when even that is short (the estimate then does not fit)."""
    if budget is None or resident <= budget:
        return 0, resident
    for k in range(1, len(blocks) + 1):
        tail = blocks[len(blocks) - k:]
        weights = resident - sum(tail) + 2 * max(tail)
        if weights <= budget:
            return k, weights
    return len(blocks), weights


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def choose_plan(memory: str, preset: Preset, dtype: torch.dtype, device: torch.device,
                text_params: tuple[int, int], plan: str | None = None,
                size: tuple[int, int] = (1024, 1024), compact: Mapping[str, int] | None = None) -> Estimate:
    """The plan for ``memory`` (``auto``: the device's) or the named ``plan``, checked to fit.
    ``compact``: the transformer file's compactly stored Linear weights (GGUF, fp8 files).

    Raises PlanError, before anything is loaded, naming the predicted bytes, the device's and the
    plan that would fit."""
    total = parse_memory(memory)
    total = device_memory(device) if total is None else total
    cuda = device.type == "cuda"
    if plan is not None and plan not in PLANS:
        raise PlanError(f"memory plan {plan!r} is unknown; plans: {', '.join(PLANS)}")
    if total is None:  # the CPU: no device limit to plan for
        return estimate(PLANS[plan or "resident"], preset, dtype, text_params, size, cuda=cuda, compact=compact)
    # a partial plan keeps the text encoders resident: with them loaded (not a run's editors,
    # which encode apart) offloading them between phases serves better, so auto skips it
    order = [n for n in AUTO_ORDER if PLANS[n].offload != "partial" or not any(text_params)]
    candidates = [estimate(PLANS[name], preset, dtype, text_params, size, cuda=cuda, compact=compact,
                           device_bytes=total) for name in order]
    fitting = next((e for e in candidates if e.fits(total) and _streams_little(e)), None)
    fitting = fitting or next((e for e in candidates if e.fits(total)), None)
    if plan is None:
        if fitting is None:
            smallest = min(candidates, key=lambda e: e.peak_device_bytes)
            raise PlanError(f"no memory plan fits {_gib(total)} of device memory: the smallest, "
                            f"{smallest.plan.name}, needs {_gib(smallest.peak_device_bytes)} at {size[0]}x{size[1]}"
                            f" ({_parts(smallest)}). Use a larger GPU or a GGUF Q4_K transformer file")
        return fitting
    chosen = estimate(PLANS[plan], preset, dtype, text_params, size, cuda=cuda, compact=compact,
                      device_bytes=total)
    if not chosen.fits(total):
        fix = f"use --memory-plan {fitting.plan.name} (predicted {_gib(fitting.peak_device_bytes)})" if fitting else \
            "no plan fits this device"
        raise PlanError(f"memory plan {plan} needs {_gib(chosen.peak_device_bytes)} ({_parts(chosen)}) but "
                        f"{USABLE:.0%} of {_gib(total)} is usable: {fix}")
    return chosen


def _streams_little(e: Estimate) -> bool:
    """False for a native-storage partial plan streaming over AUTO_MAX_STREAMED of the transformer
    (fp8 storage would stream half as much); the fp8 partial plan has no smaller storage to yield to."""
    if e.plan.offload != "partial" or e.plan.storage != "native":
        return True
    return e.streamed_bytes <= AUTO_MAX_STREAMED * e.components["transformer"]


def _parts(e: Estimate) -> str:
    return ", ".join(f"{k} {_gib(v)}" for k, v in e.parts.items())


def weight_bytes(module: nn.Module) -> dict[str, int]:
    """Bytes of a module's parameters and buffers per device ("cpu", "cuda:0", ...)."""
    out: dict[str, int] = {}
    seen: set[int] = set()
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) in seen or t.is_meta:
            continue
        seen.add(id(t))
        out[str(t.device)] = out.get(str(t.device), 0) + t.numel() * t.element_size()
    return out


def dtype_bytes(module: nn.Module) -> dict[torch.dtype, int]:
    """Bytes of a module's parameters and buffers per dtype (what the storage plan promised)."""
    out: dict[torch.dtype, int] = {}
    for t in list(module.parameters()) + list(module.buffers()):
        out[t.dtype] = out.get(t.dtype, 0) + t.numel() * t.element_size()
    return out
