"""What the driver needs to know about the model without loading it (cache planning).

Only kontext_core's public API is used: ``resolve_model`` (finds the preset and files) and
``model_fingerprint`` (identity of the weights). Every failure becomes a ConfigError that
says what to do, raised before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from manifests.limits import DTYPES
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class ModelInfo:
    spec: str  # as given: preset name or weights folder
    preset: str
    fingerprint: str
    default_steps: int
    default_guidance: float


def resolve_model_info(spec: str) -> ModelInfo:
    """Fingerprint and sampler defaults of ``spec``; ConfigError naming the fix when unusable."""
    try:
        import kontext_core
    except Exception as exc:  # a broken install is a config problem of this machine
        raise ConfigError(f"cannot import kontext_core ({exc}); reinstall with `make venv`") from exc
    try:
        source = kontext_core.resolve_model(spec)
        fingerprint = kontext_core.model_fingerprint(spec)
    except Exception as exc:
        presets = ", ".join(kontext_core.available_presets())
        raise ConfigError(
            f"model {spec!r} cannot be used: {exc}\n"
            f"Fix: pass --model with a shipped preset ({presets}) or the folder of weights "
            f"you downloaded (nothing is downloaded at run time).") from exc
    preset = source.preset
    return ModelInfo(spec=str(spec), preset=preset.name, fingerprint=fingerprint,
                     default_steps=int(preset.sampler.steps),
                     default_guidance=float(preset.sampler.guidance))


def torch_dtype(name: str):  # -> torch.dtype (torch imported lazily: the CLI starts fast)
    import torch

    if name not in DTYPES:
        raise ConfigError(f"dtype {name!r} is not supported; use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


@dataclass(frozen=True)
class MemoryPlanInfo:
    """The memory plan a run loads its model with (kontext_core.quant.plans), as the driver chose
    it from the weights' headers before any work."""

    name: str
    storage: str  # "native" | "fp8": in the cache key when not native
    offload: str  # "none" | "model" | "partial" | "group": not in the key (it moves bytes, not values)
    describe: str
    memory: str  # what was asked: auto | 80GB | 24GB | ...
    peak_device_bytes: int
    parts: dict[str, int]
    components: dict[str, int]
    streamed_blocks: int = 0  # transformer blocks streamed from host memory each step
    streamed_bytes: int = 0

    def record(self) -> dict[str, Any]:
        """config.json's ``memory_plan`` entry."""
        return {"name": self.name, "storage": self.storage, "offload": self.offload,
                "describe": self.describe, "memory": self.memory,
                "estimated_peak_device_bytes": self.peak_device_bytes,
                "estimated_parts": dict(self.parts), "estimated_components": dict(self.components),
                "estimated_streamed_blocks": self.streamed_blocks, "estimated_streamed_bytes": self.streamed_bytes}


def resolve_memory_plan(spec: str, device: str, dtype: str, memory: str = "auto",
                        plan: str | None = None) -> MemoryPlanInfo:
    """The plan for ``memory`` (or the named ``plan``) on ``device``; ConfigError (before any
    work, exit 2) for a plan that cannot fit, naming the one that would, or a bad value."""
    from kontext_core.quant.load import plan_for
    from kontext_core.quant.plans import PlanError

    try:
        # the editors hold no text encoders: the run's text phase encodes its instructions apart
        chosen = plan_for(spec, device, torch_dtype(dtype), memory, plan, text=False)
    except PlanError as exc:
        raise ConfigError(f"--memory {memory}" + (f" --memory-plan {plan}" if plan else "")
                          + f": {exc}") from None
    p = chosen.plan
    return MemoryPlanInfo(name=p.name, storage=p.storage, offload=p.offload,
                          describe=p.describe(), memory=memory,
                          peak_device_bytes=int(chosen.peak_device_bytes),
                          parts={k: int(v) for k, v in chosen.parts.items()},
                          components={k: int(v) for k, v in chosen.components.items()},
                          streamed_blocks=chosen.streamed_blocks, streamed_bytes=int(chosen.streamed_bytes))


def check_plan_options(memory: MemoryPlanInfo, fp8: bool, compile: bool) -> None:
    """Options the plan cannot honour, refused before any work (the actors would refuse them
    at load time, after Ray started)."""
    if fp8 and memory.storage == "fp8":
        raise ConfigError(f"--fp8 (fp8 matmuls) and the memory plan {memory.name} (fp8 weight storage) "
                          "both re-store the block linears: use one (--memory-plan resident or "
                          "model-offload keeps --fp8; or drop --fp8)")
    if compile and memory.offload != "none":
        raise ConfigError(f"--compile is not supported with the memory plan {memory.name} (its offload "
                          "hooks move weights between calls): use a resident plan (--memory-plan "
                          "resident or fp8) or drop --compile")
