"""A tiny Kontext wide enough for GGUF's 256-value K blocks, and its checkpoint folders.

hidden 256 (two 128-wide heads, FLUX's RoPE axes), one double and one single block; autoencoder
and text encoders are the tiny test ones. Every parameter is perturbed from its init.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from kontext_ckpt_helpers import BFL_SIDECAR, TINY, perturb_, write_bfl_folder
from PIL import Image

from kontext_core.checkpoint import diffusers_transformer_config
from kontext_core.config import Preset, preset_from_dict
from kontext_core.loading import build_random
from kontext_core.quant.layers import castable_linears

WIDE = copy.deepcopy(TINY)
WIDE["transformer"].update(hidden_size=256, num_heads=2, axes_dim=[16, 56, 56], depth=1, depth_single_blocks=1)
SIDECAR = {**BFL_SIDECAR, "transformer": {"axes_dim": [16, 56, 56]}}
INSTRUCTION = "make the background red"


def wide_preset() -> Preset:
    return preset_from_dict(json.loads(json.dumps(WIDE)))


def wide_state(seed: int = 3):
    preset = wide_preset()
    transformer, autoencoder, text = build_random(preset, seed)
    perturb_(transformer, seed + 10, 0.02)
    perturb_(autoencoder, seed + 11)
    text.t5_tokenizer.model_max_length = preset.text.t5_max_length
    return preset, transformer.eval(), autoencoder.eval(), text.eval()


def write_wide_folder(root: Path, seed: int = 3) -> Path:
    """BFL files of the wide model: flux1-kontext-dev.safetensors (fp32), ae, text, kontext.json."""
    _, transformer, autoencoder, text = wide_state(seed)
    return write_bfl_folder(root, transformer.state_dict(), autoencoder.state_dict(), text, SIDECAR)


def write_diffusers_config(root: Path, preset: Preset) -> Path:
    """A ``transformer/config.json`` for diffusers' from_single_file (no hub look-up)."""
    folder = root / "transformer"
    folder.mkdir(parents=True, exist_ok=True)
    config = {"_class_name": "FluxTransformer2DModel", **diffusers_transformer_config(preset.transformer)}
    (folder / "config.json").write_text(json.dumps(config))
    return root


def comfy_fp8_state(state: dict[str, torch.Tensor], transformer: torch.nn.Module, prefix: str = "model.diffusion_model."
                    ) -> dict[str, torch.Tensor]:
    """What ComfyUI's fp8_scaled files hold: block linears' weights float8 with a float32
    ``scale_weight`` (amax / 448), the ``scaled_fp8`` marker, everything else bf16."""
    fp8 = torch.float8_e4m3fn
    out: dict[str, torch.Tensor] = {prefix + "scaled_fp8": torch.empty(0, dtype=fp8)}
    layers = set(castable_linears(transformer))
    for key, value in state.items():
        layer = key.rpartition(".")[0]
        if layer in layers and key.endswith(".weight"):
            scale = value.float().abs().amax() / 448.0
            out[prefix + key] = (value.float() / scale).to(fp8)
            out[prefix + layer + ".scale_weight"] = scale.reshape(())
        else:
            out[prefix + key] = value.to(torch.bfloat16)
    return out


def source_image() -> Image.Image:
    img = Image.new("RGB", (48, 32), (210, 40, 30))
    img.paste((20, 90, 200), (12, 8, 36, 24))
    return img


def max_level_diff(a: Image.Image, b: Image.Image) -> int:
    import numpy as np

    return int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())
