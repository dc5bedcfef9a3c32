"""Model shapes from checkpoints: BFL files (keys and tensor shapes) and diffusers config.json.

Each ``*_fields`` function returns the TransformerConfig / AutoencoderConfig fields a checkpoint
determines. What a BFL file cannot tell (RoPE axes, GroupNorm groups, latent scale/shift) comes from
a ``kontext.json`` beside the weights, else from FLUX.1's values (see :data:`BFL_UNDERIVABLE`).
The inverse functions give the diffusers configs for our configs (writing diffusers folders).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..config import AutoencoderConfig, TransformerConfig
from .errors import CheckpointError

FLUX_AXES_DIM = (16, 56, 56)
FLUX_HEAD_DIM = 128

# Fields a BFL checkpoint's shapes cannot determine, per component.
BFL_UNDERIVABLE = {
    "transformer": ("axes_dim", "theta"),
    "autoencoder": ("norm_groups", "scale_factor", "shift_factor"),
}
SIDECAR_HINT = "kontext.json"


def _need(shapes: Mapping[str, tuple[int, ...]], key: str, where: str, what: str) -> tuple[int, ...]:
    if key not in shapes:
        raise CheckpointError(f"{where}: key {key!r} is missing: not a complete FLUX.1 {what} checkpoint")
    return shapes[key]


def _count(shapes: Mapping[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in shapes if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def bfl_transformer_fields(shapes: Mapping[str, tuple[int, ...]], where: str) -> dict[str, Any]:
    """Transformer shape from BFL keys: depths from block indices, widths from tensor shapes."""
    hidden, in_channels = _need(shapes, "img_in.weight", where, "transformer")
    depth = _count(shapes, r"double_blocks\.(\d+)\.")
    singles = _count(shapes, r"single_blocks\.(\d+)\.")
    if depth:
        mlp_hidden = _need(shapes, "double_blocks.0.img_mlp.0.weight", where, "transformer")[0]
        head_dim = _need(shapes, "double_blocks.0.img_attn.norm.query_norm.scale", where, "transformer")[0]
    elif singles:
        mlp_hidden = _need(shapes, "single_blocks.0.linear2.weight", where, "transformer")[1] - hidden
        head_dim = _need(shapes, "single_blocks.0.norm.query_norm.scale", where, "transformer")[0]
    else:
        raise CheckpointError(f"{where}: no double_blocks.* or single_blocks.* keys: not a FLUX.1 transformer")
    if hidden % head_dim:
        raise CheckpointError(f"{where}: hidden size {hidden} is not a multiple of the head dim {head_dim}")
    return {
        "in_channels": in_channels,
        "out_channels": _need(shapes, "final_layer.linear.weight", where, "transformer")[0],
        "vec_in_dim": _need(shapes, "vector_in.in_layer.weight", where, "transformer")[1],
        "context_in_dim": _need(shapes, "txt_in.weight", where, "transformer")[1],
        "hidden_size": hidden,
        "mlp_ratio": mlp_hidden / hidden,
        "num_heads": hidden // head_dim,
        "depth": depth,
        "depth_single_blocks": singles,
        "qkv_bias": not depth or "double_blocks.0.img_attn.qkv.bias" in shapes,
        "guidance_embed": "guidance_in.in_layer.weight" in shapes,
        # Not in the shapes: FLUX's values, valid only for its 128-wide heads (checked in merge).
        "axes_dim": FLUX_AXES_DIM if head_dim == FLUX_HEAD_DIM else None,
        "theta": 10_000,
    }


def bfl_autoencoder_fields(shapes: Mapping[str, tuple[int, ...]], where: str) -> dict[str, Any]:
    """Autoencoder shape from BFL ``ae.safetensors`` keys (norm groups and latent factors: FLUX's)."""
    ch, in_channels = _need(shapes, "encoder.conv_in.weight", where, "autoencoder")[:2]
    levels = _count(shapes, r"encoder\.down\.(\d+)\.")
    blocks = _count(shapes, r"encoder\.down\.0\.block\.(\d+)\.")
    if not levels or not blocks:
        raise CheckpointError(f"{where}: no encoder.down.N.block.M keys: not a FLUX autoencoder checkpoint")
    widths = [_need(shapes, f"encoder.down.{i}.block.0.conv1.weight", where, "autoencoder")[0] for i in range(levels)]
    if any(w % ch for w in widths):
        raise CheckpointError(f"{where}: level widths {widths} are not multiples of conv_in's {ch} channels")
    return {
        "in_channels": in_channels,
        "out_ch": _need(shapes, "decoder.conv_out.weight", where, "autoencoder")[0],
        "ch": ch,
        "ch_mult": tuple(w // ch for w in widths),
        "num_res_blocks": blocks,
        "z_channels": _need(shapes, "decoder.conv_in.weight", where, "autoencoder")[1],
        "norm_groups": 32,
        "scale_factor": 0.3611,
        "shift_factor": 0.1159,
    }


_DIFFUSERS_TF_DEFAULTS = {  # FluxTransformer2DModel.__init__ defaults (diffusers 0.42)
    "patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "pooled_projection_dim": 768, "guidance_embeds": False, "axes_dims_rope": (16, 56, 56),
}


def diffusers_transformer_fields(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Our transformer fields from a diffusers ``transformer/config.json``."""
    c = {**_DIFFUSERS_TF_DEFAULTS, **config}
    if c["patch_size"] != 1:
        raise CheckpointError(f"{where}: patch_size {c['patch_size']} is not supported (FLUX.1 uses 1)")
    return {
        "in_channels": c["in_channels"],
        "out_channels": c["out_channels"] or c["in_channels"],
        "vec_in_dim": c["pooled_projection_dim"],
        "context_in_dim": c["joint_attention_dim"],
        "hidden_size": c["num_attention_heads"] * c["attention_head_dim"],
        "mlp_ratio": 4.0,  # fixed in diffusers' Flux blocks
        "num_heads": c["num_attention_heads"],
        "depth": c["num_layers"],
        "depth_single_blocks": c["num_single_layers"],
        "axes_dim": tuple(c["axes_dims_rope"]),
        "theta": 10_000,  # hard-coded in FluxPosEmbed
        "qkv_bias": True,
        "guidance_embed": bool(c["guidance_embeds"]),
    }


_DIFFUSERS_VAE_DEFAULTS = {  # AutoencoderKL.__init__ defaults that matter here (diffusers 0.42)
    "in_channels": 3, "out_channels": 3, "block_out_channels": (64,), "layers_per_block": 1,
    "latent_channels": 4, "norm_num_groups": 32, "scaling_factor": 0.18215, "shift_factor": None,
    "use_quant_conv": True, "use_post_quant_conv": True, "mid_block_add_attention": True, "act_fn": "silu",
}


def diffusers_autoencoder_fields(config: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Our autoencoder fields from a diffusers ``vae/config.json`` (FLUX-style AutoencoderKL only)."""
    c = {**_DIFFUSERS_VAE_DEFAULTS, **config}
    unsupported = [k for k in ("use_quant_conv", "use_post_quant_conv") if c[k]]
    if unsupported or not c["mid_block_add_attention"] or c["act_fn"] != "silu":
        raise CheckpointError(
            f"{where}: not a FLUX autoencoder ({', '.join(unsupported) or 'mid block / activation'} differs): "
            "FLUX's AutoencoderKL has use_quant_conv and use_post_quant_conv false, mid-block attention, silu"
        )
    widths = list(c["block_out_channels"])
    ch = widths[0]
    if any(w % ch for w in widths):
        raise CheckpointError(f"{where}: block_out_channels {widths} are not multiples of the first")
    for key, want in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
        types = config.get(key, [want] * len(widths))
        if len(types) != len(widths) or any(t != want for t in types):
            raise CheckpointError(f"{where}: {key} {types} unsupported; expected {len(widths)} × {want}")
    return {
        "in_channels": c["in_channels"],
        "out_ch": c["out_channels"],
        "ch": ch,
        "ch_mult": tuple(w // ch for w in widths),
        "num_res_blocks": c["layers_per_block"],
        "z_channels": c["latent_channels"],
        "scale_factor": float(c["scaling_factor"]),
        "shift_factor": float(c["shift_factor"] or 0.0),
        "norm_groups": c["norm_num_groups"],
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(a)))
    return a == b


def merge_declared(derived: dict[str, Any], declared: Mapping[str, Any] | None, underivable: tuple[str, ...],
                   component: str, where: str, sidecar: str) -> dict[str, Any]:
    """Fields from the checkpoint plus those ``declared`` in a kontext.json.

    Declared values fill what the checkpoint cannot tell (``underivable``); for every other field
    they must agree with the checkpoint, else the folder is inconsistent.
    """
    out = dict(derived)
    known = {f.name for f in fields(TransformerConfig if component == "transformer" else AutoencoderConfig)}
    for key, value in (declared or {}).items():
        if key not in known:
            raise CheckpointError(f"{sidecar}: unknown {component} field {key!r}; known: {', '.join(sorted(known))}")
        if key in underivable:
            out[key] = tuple(value) if isinstance(value, list) else value
        elif not _same(value, derived[key]):
            raise CheckpointError(f"{sidecar}: {component}.{key} is {value!r} but the weights in {where} have "
                                  f"{derived[key]!r}; fix or remove the field")
    if component == "transformer" and out.get("axes_dim") is None:
        head_dim = out["hidden_size"] // out["num_heads"]
        raise CheckpointError(
            f"{where}: cannot infer the RoPE axes for head dim {head_dim} (FLUX.1's (16, 56, 56) needs 128): "
            f'add {SIDECAR_HINT} beside the weights with {{"transformer": {{"axes_dim": [...]}}}} summing to {head_dim}'
        )
    return out


def diffusers_transformer_config(cfg: TransformerConfig) -> dict[str, Any]:
    """``FluxTransformer2DModel`` init arguments for our config (diffusers fixes some choices)."""
    fixed = {"mlp_ratio": (cfg.mlp_ratio, 4.0), "theta": (cfg.theta, 10_000), "qkv_bias": (cfg.qkv_bias, True)}
    bad = {k: v for k, (v, want) in fixed.items() if not _same(v, want)}
    if bad:
        raise CheckpointError(f"a diffusers FluxTransformer2DModel cannot hold this transformer: {bad} "
                              "(diffusers fixes mlp_ratio=4, theta=10000, qkv bias on)")
    return {
        "patch_size": 1, "in_channels": cfg.in_channels, "out_channels": cfg.out_channels,
        "num_layers": cfg.depth, "num_single_layers": cfg.depth_single_blocks, "attention_head_dim": cfg.head_dim,
        "num_attention_heads": cfg.num_heads, "joint_attention_dim": cfg.context_in_dim,
        "pooled_projection_dim": cfg.vec_in_dim, "guidance_embeds": cfg.guidance_embed,
        "axes_dims_rope": tuple(cfg.axes_dim),
    }


def diffusers_vae_config(cfg: AutoencoderConfig) -> dict[str, Any]:
    """``AutoencoderKL`` init arguments for our config (FLUX style: no quant convs)."""
    n = len(cfg.ch_mult)
    return {
        "in_channels": cfg.in_channels, "out_channels": cfg.out_ch,
        "down_block_types": ("DownEncoderBlock2D",) * n, "up_block_types": ("UpDecoderBlock2D",) * n,
        "block_out_channels": tuple(cfg.ch * m for m in cfg.ch_mult), "layers_per_block": cfg.num_res_blocks,
        "latent_channels": cfg.z_channels, "norm_num_groups": cfg.norm_groups,
        "scaling_factor": cfg.scale_factor, "shift_factor": cfg.shift_factor,
        "use_quant_conv": False, "use_post_quant_conv": False, "mid_block_add_attention": True,
    }

