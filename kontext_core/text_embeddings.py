"""TextEmbeddings apart from the encoders: an editor that is given stored embeddings (the text
phase) and the driver that keys them never import transformers (seconds per process)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TextEmbeddings:
    t5: torch.Tensor  # [B, L, d_t5]
    pooled: torch.Tensor  # [B, d_clip]
    truncated: list[bool]  # cut at the T5 token limit
    clip_truncated: list[bool] = field(default_factory=list)  # cut at CLIP's (77 in FLUX, 24 in kontext-tiny)
