"""Tiny Kontext models and the checkpoint folders built from them (diffusers and BFL layouts).

Shared by test_parity_diffusers.py and test_loading.py. The tiny configuration keeps diffusers'
fixed choices (mlp_ratio 4, qkv bias) so the same weights exist in both layouts; every parameter,
norms included, is perturbed from its init so that a wrong rename or split cannot go unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxTransformer2DModel,
)
from safetensors.torch import save_file

from kontext_core.autoencoder import AutoEncoder
from kontext_core.checkpoint import (
    autoencoder_rules,
    diffusers_transformer_config,
    diffusers_vae_config,
    to_diffusers,
    transformer_rules,
)
from kontext_core.config import Preset, preset_from_dict
from kontext_core.editor import KontextEditor
from kontext_core.loading import build_random
from kontext_core.text import TextEncoders
from kontext_core.transformer import KontextTransformer

WORDS = ("make", "the", "background", "red", "blue", "turn", "shoe", "into", "a", "green", "bag")
SIZE = (48, 32)  # (width, height): non-square, 12×8 tokens with the 2-level autoencoder

TINY = {
    "name": "kontext-test-tiny",
    "description": "test model",
    "transformer": {"in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32,
                    "hidden_size": 32, "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2,
                    "axes_dim": [4, 6, 6], "theta": 10000, "qkv_bias": True, "guidance_embed": True},
    "autoencoder": {"in_channels": 3, "out_ch": 3, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1,
                    "z_channels": 4, "scale_factor": 0.8, "shift_factor": 0.05, "norm_groups": 8},
    "text": {"t5_max_length": 16, "clip_max_length": 16,
             "t5_config": {"d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 1,
                           "relative_attention_num_buckets": 8, "relative_attention_max_distance": 16,
                           "feed_forward_proj": "gated-gelu", "dropout_rate": 0.0},
             "clip_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                             "num_hidden_layers": 1, "max_position_embeddings": 16, "projection_dim": 32,
                             "attention_dropout": 0.0, "dropout": 0.0},
             "vocabulary": list(WORDS)},
    "sampler": {"steps": 4, "guidance": 2.5},
    "resolution": {"kind": "fixed", "size": list(SIZE)},
}
# What a kontext.json beside BFL files must add: the fields shapes cannot tell, and the settings.
BFL_SIDECAR = {
    "name": TINY["name"],
    "transformer": {"axes_dim": TINY["transformer"]["axes_dim"]},
    "autoencoder": {k: TINY["autoencoder"][k] for k in ("norm_groups", "scale_factor", "shift_factor")},
    "sampler": TINY["sampler"],
    "resolution": TINY["resolution"],
}


def tiny_preset() -> Preset:
    return preset_from_dict(json.loads(json.dumps(TINY)))


def perturb_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Add seeded noise to every parameter (norm scales and biases included)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def tiny_native(seed: int = 7, perturbation: float = 0.05
                ) -> tuple[Preset, KontextTransformer, AutoEncoder, TextEncoders]:
    """Seeded tiny modules; ``perturbation`` > ~0.1 makes the random transformer chaotic (a 1e-3 input
    change grows to O(1) over 4 steps), which only the bf16 comparison cares about."""
    preset = tiny_preset()
    transformer, autoencoder, text = build_random(preset, seed)
    perturb_(transformer, seed + 10, perturbation)
    perturb_(autoencoder, seed + 11)
    text.t5_tokenizer.model_max_length = preset.text.t5_max_length  # saved to tokenizer_2's config
    return preset, transformer.eval(), autoencoder.eval(), text.eval()


def tiny_editor(seed: int = 7, perturbation: float = 0.05) -> KontextEditor:
    preset, transformer, autoencoder, text = tiny_native(seed, perturbation)
    return KontextEditor(preset, transformer, autoencoder, text, torch.device("cpu"), torch.float32, "native")


def diffusers_models(editor: KontextEditor) -> tuple[FluxTransformer2DModel, AutoencoderKL]:
    """The editor's weights in diffusers' own model classes (through our conversion tables)."""
    tf_cfg, ae_cfg = editor.preset.transformer, editor.preset.autoencoder
    transformer = FluxTransformer2DModel(**diffusers_transformer_config(tf_cfg))
    transformer.load_state_dict(to_diffusers(editor.transformer.state_dict(), transformer_rules(tf_cfg)), strict=True)
    vae = AutoencoderKL(**diffusers_vae_config(ae_cfg))
    vae.load_state_dict(to_diffusers(editor.autoencoder.state_dict(), autoencoder_rules(ae_cfg)), strict=True)
    return transformer.eval(), vae.eval()


def diffusers_scheduler(preset: Preset) -> FlowMatchEulerDiscreteScheduler:
    s = preset.sampler
    return FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=s.base_shift, max_shift=s.max_shift,
                                           base_image_seq_len=s.base_seq_len, max_image_seq_len=s.max_seq_len)


def diffusers_pipeline(editor: KontextEditor) -> FluxKontextPipeline:
    """FluxKontextPipeline over the SAME text encoder modules the editor uses."""
    transformer, vae = diffusers_models(editor)
    text = editor.text
    return FluxKontextPipeline(scheduler=diffusers_scheduler(editor.preset), vae=vae, text_encoder=text.clip,
                               tokenizer=text.clip_tokenizer, text_encoder_2=text.t5, tokenizer_2=text.t5_tokenizer,
                               transformer=transformer)


def write_diffusers_folder(root: Path, editor: KontextEditor, max_shard_size: str | None = None) -> Path:
    """A diffusers model folder via diffusers' and transformers' own save_pretrained."""
    diffusers_pipeline(editor).save_pretrained(root, max_shard_size=max_shard_size)
    return root


def write_bfl_folder(root: Path, transformer_state: dict[str, torch.Tensor], ae_state: dict[str, torch.Tensor],
                     text: TextEncoders, sidecar: dict | None = BFL_SIDECAR, prefix: str = "") -> Path:
    """BFL single files (+ text folders and an optional kontext.json) from native-named state dicts."""
    root.mkdir(parents=True, exist_ok=True)
    save_file({prefix + k: v.contiguous() for k, v in transformer_state.items()},
              str(root / "flux1-kontext-dev.safetensors"))
    save_file({k: v.contiguous() for k, v in ae_state.items()}, str(root / "ae.safetensors"))
    text.save(root)
    if sidecar is not None:
        (root / "kontext.json").write_text(json.dumps(sidecar))
    return root
