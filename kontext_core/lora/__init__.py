"""LoRA adapters for the Kontext transformer: read any common format, apply and switch sets on a
resident model (see ``formats`` for the formats, ``apply`` for the modes).

    adapter = load_lora("style.safetensors")            # LoraAdapter; .fingerprint = sha256 of the file
    set_loras(editor.transformer, [(adapter, 0.8)])      # switch between batches; [] = the base model
    with apply_loras(editor.transformer, [(adapter, 0.8)]):
        out = editor.edit(...)
"""

from .adapter import LoraAdapter, LoraPiece
from .apply import (
    LORA_VERSION,
    MODES,
    LoraSet,
    active_loras,
    apply_loras,
    canonical,
    check_loras,
    clear_loras,
    lora_key,
    set_loras,
)
from .errors import LoraError
from .formats import load_lora
from .spec import LoraSpec, check_scale, parse_lora_spec

__all__ = [
    "LORA_VERSION",
    "MODES",
    "LoraAdapter",
    "LoraError",
    "LoraPiece",
    "LoraSet",
    "LoraSpec",
    "active_loras",
    "apply_loras",
    "canonical",
    "check_loras",
    "check_scale",
    "clear_loras",
    "load_lora",
    "lora_key",
    "parse_lora_spec",
    "set_loras",
]
