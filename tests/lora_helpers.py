"""LoRA files for the tiny Kontext of kontext_ckpt_helpers, in each format found in the wild.

- diffusers/PEFT: written by the libraries' own writers (peft's LoraConfig on diffusers'
  FluxTransformer2DModel, ``get_peft_model_state_dict``, ``FluxKontextPipeline.save_lora_weights``).
- kohya, XLabs, fal Kontext: key layouts built by hand from their documented names.
Factors are seeded; they change the model's output by tens of percent, so a misplaced layer shows.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import FluxKontextPipeline, FluxTransformer2DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

HIDDEN, MLP, DOUBLE, SINGLE = 32, 128, 2, 2  # the tiny preset's transformer
PEFT_TARGETS = [
    "to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "proj_mlp",
    "proj_out", "norm1.linear", "norm1_context.linear", "norm.linear", "ff.net.0.proj", "ff.net.2",
    "ff_context.net.0.proj", "ff_context.net.2", "x_embedder", "context_embedder", "norm_out.linear",
    "time_text_embed.timestep_embedder.linear_1", "time_text_embed.guidance_embedder.linear_2",
]


def write_peft_lora(path: Path, transformer: FluxTransformer2DModel, seed: int, rank: int = 4, alpha: float = 8,
                    **config) -> Path:
    """A diffusers-format LoRA over ``transformer``'s modules (the model is left without adapters)."""
    torch.manual_seed(seed)
    transformer.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, target_modules=PEFT_TARGETS,
                                       init_lora_weights=False, **config), adapter_name="w")
    with torch.no_grad():  # peft's random B is as large as A; smaller keeps the edit well-conditioned
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.mul_(0.3)
    state = get_peft_model_state_dict(transformer, adapter_name="w")
    metadata = transformer.peft_config["w"].to_dict()
    transformer.delete_adapters("w")
    FluxKontextPipeline.save_lora_weights(path, transformer_lora_layers=state,
                                          transformer_lora_adapter_metadata=metadata)
    return path / "pytorch_lora_weights.safetensors"


def _factors(gen: torch.Generator, rank: int, in_features: int, out_features: int) -> tuple[torch.Tensor, ...]:
    down = torch.randn(rank, in_features, generator=gen) * 0.3
    up = torch.randn(out_features, rank, generator=gen) * 0.1
    return down, up


# native Linear name -> (in, out) for the layers every hand-built format may name
def native_linears(single_linear1: bool = True) -> dict[str, tuple[int, int]]:
    out = {}
    for i in range(DOUBLE):
        for s in ("img", "txt"):
            out |= {f"double_blocks.{i}.{s}_attn.qkv": (HIDDEN, 3 * HIDDEN), f"double_blocks.{i}.{s}_attn.proj":
                    (HIDDEN, HIDDEN), f"double_blocks.{i}.{s}_mlp.0": (HIDDEN, MLP),
                    f"double_blocks.{i}.{s}_mlp.2": (MLP, HIDDEN), f"double_blocks.{i}.{s}_mod.lin": (HIDDEN, 6 * HIDDEN)}
    for i in range(SINGLE):
        if single_linear1:
            out[f"single_blocks.{i}.linear1"] = (HIDDEN, 3 * HIDDEN + MLP)
        out |= {f"single_blocks.{i}.linear2": (HIDDEN + MLP, HIDDEN), f"single_blocks.{i}.modulation.lin":
                (HIDDEN, 3 * HIDDEN)}
    return out


def write_kohya_lora(path: Path, seed: int, layers: dict[str, tuple[int, int]] | None = None,
                     no_alpha: tuple[str, ...] = ()) -> Path:
    """sd-scripts layout: lora_unet_<name with underscores>.{lora_down,lora_up}.weight + .alpha.
    Ranks 4 (alpha 2: scale 0.5) and, every third layer, 6 without alpha (scale 1); layers whose
    name starts with one of ``no_alpha`` have no alpha either."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for n, (name, (fan_in, fan_out)) in enumerate((layers or native_linears(single_linear1=False)).items()):
        rank = 6 if n % 3 == 2 else 4
        down, up = _factors(gen, rank, fan_in, fan_out)
        key = "lora_unet_" + name.replace(".", "_")
        state[f"{key}.lora_down.weight"], state[f"{key}.lora_up.weight"] = down, up
        if rank == 4 and not (no_alpha and name.startswith(no_alpha)):
            state[f"{key}.alpha"] = torch.tensor(2.0)
    save_file(state, str(path))
    return path


def write_xlabs_lora(path: Path, seed: int, rank: int = 4) -> Path:
    """XLabs layout: double_blocks.N.processor.{qkv,proj}_lora{1,2}, single_blocks.N.processor.{qkv,proj}_lora."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    layers = {}
    for i in range(DOUBLE):
        for stream in ("1", "2"):
            layers[f"double_blocks.{i}.processor.qkv_lora{stream}"] = (HIDDEN, 3 * HIDDEN)
            layers[f"double_blocks.{i}.processor.proj_lora{stream}"] = (HIDDEN, HIDDEN)
    for i in range(SINGLE):
        layers[f"single_blocks.{i}.processor.qkv_lora"] = (HIDDEN, 3 * HIDDEN)
        layers[f"single_blocks.{i}.processor.proj_lora"] = (HIDDEN + MLP, HIDDEN)
    for name, (fan_in, fan_out) in layers.items():
        state[f"{name}.down.weight"], state[f"{name}.up.weight"] = _factors(gen, rank, fan_in, fan_out)
    save_file(state, str(path))
    return path


def fal_state(seed: int, layers: dict[str, tuple[int, int]], rank: int = 4) -> dict[str, torch.Tensor]:
    """fal Kontext layout: PEFT keys on BFL names under base_model.model., no alpha."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, (fan_in, fan_out) in layers.items():
        down, up = _factors(gen, rank, fan_in, fan_out)
        state[f"base_model.model.{name}.lora_A.weight"], state[f"base_model.model.{name}.lora_B.weight"] = down, up
    return state


def fal_layers() -> dict[str, tuple[int, int]]:
    """Every layer fal's Kontext LoRAs hold (diffusers' converter expects all of them)."""
    return native_linears() | {"final_layer.linear": (HIDDEN, 16)}
