"""A LoRA adapter normalised to our native module names (what every file format is read into)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class LoraPiece:
    """Low-rank update of some rows of one native Linear: ΔW[rows] = scale · up @ down.

    ``rows`` are the target's row segments (see ``names.Target``); biases, when the format has
    them, add ``scale · (up @ down_bias + up_bias)`` to the same rows of the layer's bias.
    """

    module: str
    segments: tuple[int, ...] | None
    down: torch.Tensor  # [rank, in_features]
    up: torch.Tensor  # [rows, rank]
    scale: float = 1.0  # alpha / rank of the format (1 when the file has no alpha)
    down_bias: torch.Tensor | None = None  # [rank]
    up_bias: torch.Tensor | None = None  # [rows]

    @property
    def rank(self) -> int:
        return self.down.shape[0]


@dataclass(frozen=True)
class LoraAdapter:
    """One adapter file, read and renamed. ``fingerprint``: sha256 of the file's bytes (cache key)."""

    path: str
    fingerprint: str
    format: str  # "diffusers", "kohya", "xlabs", "native" (fal Kontext, ComfyUI lora_A/lora_B)
    pieces: tuple[LoraPiece, ...] = field(repr=False)

    @property
    def modules(self) -> list[str]:
        """The native modules it changes, in file order, each once."""
        return list(dict.fromkeys(p.module for p in self.pieces))

    @property
    def num_parameters(self) -> int:
        return sum(p.down.numel() + p.up.numel() for p in self.pieces)
