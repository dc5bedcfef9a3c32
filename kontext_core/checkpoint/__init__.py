"""Checkpoints: layouts on disk, key-conversion tables (native BFL names <-> diffusers), config
inference from shapes/config.json, and streaming loads into meta-built modules."""

from .errors import CheckpointError, ModelNotFoundError
from .infer import diffusers_transformer_config, diffusers_vae_config
from .layout import ComponentWeights, find_hf_snapshot, hf_hub_cache
from .safetensors_io import TensorSource, read_header, read_state_dict
from .stream import fill_module
from .tables import Op, Rule, autoencoder_rules, to_diffusers, to_native, transformer_rules

__all__ = [
    "CheckpointError",
    "ComponentWeights",
    "ModelNotFoundError",
    "Op",
    "Rule",
    "TensorSource",
    "autoencoder_rules",
    "diffusers_transformer_config",
    "diffusers_vae_config",
    "fill_module",
    "find_hf_snapshot",
    "hf_hub_cache",
    "read_header",
    "read_state_dict",
    "to_diffusers",
    "to_native",
    "transformer_rules",
]
