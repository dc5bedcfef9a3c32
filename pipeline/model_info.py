"""What the driver needs to know about the model without loading it (cache planning).

Only kontext_core's public API is used: ``resolve_model`` (finds the preset and files) and
``model_fingerprint`` (identity of the weights). Every failure becomes a ConfigError that
says what to do, raised before Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass

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
