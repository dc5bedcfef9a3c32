"""LoRA files for the pipeline tests' model (tiny-random: hidden 64, one double and one single
block), written with lora_helpers' kohya writer, and one for another model (hidden 32)."""

from __future__ import annotations

from pathlib import Path

from lora_helpers import write_kohya_lora

HIDDEN, MLP = 64, 256  # tiny-random's transformer (kontext_core/presets/tiny-random.json)


def tiny_random_layers() -> dict[str, tuple[int, int]]:
    """native Linear name -> (in, out) of tiny-random's block linears."""
    layers = {}
    for s in ("img", "txt"):
        layers |= {f"double_blocks.0.{s}_attn.qkv": (HIDDEN, 3 * HIDDEN),
                   f"double_blocks.0.{s}_attn.proj": (HIDDEN, HIDDEN),
                   f"double_blocks.0.{s}_mlp.0": (HIDDEN, MLP), f"double_blocks.0.{s}_mlp.2": (MLP, HIDDEN),
                   f"double_blocks.0.{s}_mod.lin": (HIDDEN, 6 * HIDDEN)}
    layers |= {"single_blocks.0.linear2": (HIDDEN + MLP, HIDDEN),
               "single_blocks.0.modulation.lin": (HIDDEN, 3 * HIDDEN)}
    return layers


def write_tiny_random_lora(path: Path, seed: int) -> Path:
    """A kohya-layout LoRA that fits tiny-random (seeded: equal seeds, equal bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_kohya_lora(path, seed, layers=tiny_random_layers())


def write_other_model_lora(path: Path, seed: int = 0) -> Path:
    """A LoRA for kontext_ckpt_helpers' tiny Kontext (hidden 32, two blocks of each kind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_kohya_lora(path, seed)
