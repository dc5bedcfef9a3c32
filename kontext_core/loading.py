"""Turning a model spec (preset name, weights folder or file) into ready modules.

Layouts understood:
- a shipped preset (``kontext-tiny``; ``tiny-random`` builds seeded random weights),
- a native folder: ``kontext.json`` (a preset) + ``transformer.safetensors`` + ``ae.safetensors``
  (BFL key names) + text encoder folders — the format our own training writes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from .autoencoder import AutoEncoder
from .config import PRESET_DIR, Preset, available_presets, load_preset, preset_from_dict
from .text import TextEncoders
from .transformer import KontextTransformer

NATIVE_PRESET_FILE = "kontext.json"


class ModelNotFoundError(FileNotFoundError):
    """A model spec that names nothing on disk; the message says where files must go."""


class CheckpointError(ValueError):
    """A checkpoint that is wrong or incomplete; names the file, the key and the shapes."""


@dataclass
class ModelSource:
    kind: str  # "random" | "native" | ...
    preset: Preset
    root: Path | None = None
    files: list[Path] = field(default_factory=list)  # weight files, for the fingerprint


def resolve_model(spec: str | Path) -> ModelSource:
    """Find what ``spec`` names, without loading any weights."""
    spec_str = str(spec)
    if (PRESET_DIR / f"{spec_str}.json").is_file():
        preset = load_preset(spec_str)
        if preset.random_init_seed is not None:
            return ModelSource("random", preset)
        if preset.weights is None:
            raise ModelNotFoundError(
                f"preset {preset.name!r} ships no weights: download them and pass their folder as the model "
                "(the diffusers folder of black-forest-labs/FLUX.1-Kontext-dev, or a folder holding "
                "flux1-kontext-dev.safetensors + ae.safetensors + the text encoder folders)"
            )
        return _native_source((PRESET_DIR / preset.weights).resolve())
    path = Path(spec_str).expanduser()
    if path.is_dir() and (path / NATIVE_PRESET_FILE).is_file():
        return _native_source(path.resolve())
    if path.exists():
        raise ModelNotFoundError(f"{path} is not a model folder this version understands (no {NATIVE_PRESET_FILE})")
    raise ModelNotFoundError(
        f"model {spec_str!r} is neither a known preset ({', '.join(available_presets())}) nor a folder on disk. "
        "Nothing is downloaded at run time: download the weights yourself and pass their folder."
    )


def _native_source(root: Path) -> ModelSource:
    preset = preset_from_dict(json.loads((root / NATIVE_PRESET_FILE).read_text()))
    files = [root / "transformer.safetensors", root / "ae.safetensors"]
    for f in files:
        if not f.is_file():
            raise ModelNotFoundError(f"{f} is missing: a native model folder needs transformer.safetensors and ae.safetensors")
    files += sorted(root.glob("text_encoder*/*.safetensors"))
    return ModelSource("native", preset, root, files)


def build_random(preset: Preset, seed: int) -> tuple[KontextTransformer, AutoEncoder, TextEncoders]:
    """Seeded random modules for a preset (tests, and the start of training)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = KontextTransformer(preset.transformer)
        autoencoder = AutoEncoder(preset.autoencoder)
    return transformer, autoencoder, TextEncoders.from_config(preset.text, seed + 1)


def load_state_streaming(module: torch.nn.Module, path: Path, device: torch.device | str, dtype: torch.dtype) -> None:
    """Copy tensors one at a time from a safetensors file into ``module`` (never two host copies).

    Every key the module expects must be present with the same shape; errors name the file, the key,
    and expected vs found.
    """
    expected = module.state_dict()
    with safe_open(str(path), framework="pt", device="cpu") as f:
        keys = set(f.keys())
        missing = sorted(set(expected) - keys)
        if missing:
            raise CheckpointError(f"{path}: {len(missing)} expected key(s) missing, e.g. {missing[:3]}")
        unexpected = sorted(keys - set(expected))
        if unexpected:
            raise CheckpointError(f"{path}: unexpected key(s) {unexpected[:3]}: is this the right model/config?")
        for name, target in expected.items():
            shape = tuple(f.get_slice(name).get_shape())
            if shape != tuple(target.shape):
                raise CheckpointError(f"{path}: key {name!r} has shape {shape}, expected {tuple(target.shape)}")
            with torch.no_grad():
                target.copy_(f.get_tensor(name).to(device=target.device, dtype=target.dtype))
    module.to(device=device, dtype=dtype)


def load_components(source: ModelSource, device: torch.device | str, dtype: torch.dtype
                    ) -> tuple[KontextTransformer, AutoEncoder, TextEncoders]:
    if source.kind == "random":
        transformer, autoencoder, text = build_random(source.preset, source.preset.random_init_seed or 0)
    elif source.kind == "native":
        transformer = KontextTransformer(source.preset.transformer)
        autoencoder = AutoEncoder(source.preset.autoencoder)
        load_state_streaming(transformer, source.root / "transformer.safetensors", device, dtype)
        load_state_streaming(autoencoder, source.root / "ae.safetensors", device, dtype)
        text = TextEncoders.from_folders(source.root, source.preset.text, dtype)
    else:
        raise ValueError(f"unknown model source kind {source.kind!r}")
    return (transformer.to(device=device, dtype=dtype).eval(), autoencoder.to(device=device, dtype=dtype).eval(),
            text.to(device=device, dtype=dtype).eval())
