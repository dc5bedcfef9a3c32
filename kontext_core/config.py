"""Model configurations and presets.

A preset is data (a JSON file in ``presets/``): the transformer and autoencoder shapes, the text
encoder settings, the sampler defaults and the resolution policy. Loading code never branches on a
preset's name, only on its fields.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class TransformerConfig:
    """FLUX transformer shape (BFL ``FluxParams``)."""

    in_channels: int = 64
    out_channels: int = 64
    vec_in_dim: int = 768
    context_in_dim: int = 4096
    hidden_size: int = 3072
    mlp_ratio: float = 4.0
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    axes_dim: tuple[int, ...] = (16, 56, 56)
    theta: int = 10_000
    qkv_bias: bool = True
    guidance_embed: bool = True

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if sum(self.axes_dim) != self.head_dim:
            raise ValueError(f"axes_dim {self.axes_dim} must sum to the head dim {self.head_dim}")


@dataclass(frozen=True)
class AutoencoderConfig:
    """FLUX autoencoder shape (BFL ``AutoEncoderParams``)."""

    in_channels: int = 3
    out_ch: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    z_channels: int = 16
    scale_factor: float = 0.3611
    shift_factor: float = 0.1159
    norm_groups: int = 32

    @property
    def downscale(self) -> int:
        """Pixels per latent cell along one side."""
        return 2 ** (len(self.ch_mult) - 1)


T5_MAX_LENGTH_LIMIT = 512  # FLUX pipelines (BFL and diffusers) refuse longer T5 prompts


@dataclass(frozen=True)
class TextConfig:
    """Text encoder settings; the models themselves come from transformers configs."""

    t5_max_length: int = 512
    clip_max_length: int = 77
    t5_config: dict[str, Any] | None = None  # for presets built from config (tiny / tests)
    clip_config: dict[str, Any] | None = None
    vocabulary: tuple[str, ...] | None = None  # words for a built tiny tokenizer

    def __post_init__(self) -> None:
        # T5 v1.1's relative attention was trained up to 512 tokens; FLUX pipelines refuse more.
        if not 0 < self.t5_max_length <= T5_MAX_LENGTH_LIMIT:
            raise ValueError(f"text.t5_max_length {self.t5_max_length} is outside 1..{T5_MAX_LENGTH_LIMIT} "
                             "(FLUX's T5 limit); set it to 512 or less")


@dataclass(frozen=True)
class SamplerDefaults:
    steps: int = 28
    guidance: float = 2.5
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_seq_len: int = 256
    max_seq_len: int = 4096


@dataclass(frozen=True)
class ResolutionPolicy:
    """How the context is resized and what the default output size is.

    ``kontext``: snap to Kontext's preferred-resolution list (BFL behaviour).
    ``fixed``: resize the context to ``size`` (a small model's native size).
    """

    kind: str = "kontext"
    size: tuple[int, int] | None = None  # (width, height) for kind == "fixed"


@dataclass(frozen=True)
class Preset:
    name: str
    transformer: TransformerConfig
    autoencoder: AutoencoderConfig
    text: TextConfig
    sampler: SamplerDefaults = field(default_factory=SamplerDefaults)
    resolution: ResolutionPolicy = field(default_factory=ResolutionPolicy)
    weights: str | None = None  # folder (relative to the preset file) holding shipped weights
    random_init_seed: int | None = None  # build random weights (tests) instead of loading
    description: str = ""

    @property
    def pixels_per_token(self) -> int:
        return 2 * self.autoencoder.downscale

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tuples(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: tuple(v) if k in keys and v is not None else v for k, v in d.items()}


def preset_from_dict(d: dict[str, Any]) -> Preset:
    """Build a :class:`Preset` from plain data (a preset JSON file)."""
    tf = TransformerConfig(**_tuples(d.get("transformer", {}), ("axes_dim",)))
    tf.validate()
    ae = AutoencoderConfig(**_tuples(d.get("autoencoder", {}), ("ch_mult",)))
    text = TextConfig(**_tuples(d.get("text", {}), ("vocabulary",)))
    sampler = SamplerDefaults(**d.get("sampler", {}))
    res = ResolutionPolicy(**_tuples(d.get("resolution", {}), ("size",)))
    return Preset(
        name=d["name"],
        transformer=tf,
        autoencoder=ae,
        text=text,
        sampler=sampler,
        resolution=res,
        weights=d.get("weights"),
        random_init_seed=d.get("random_init_seed"),
        description=d.get("description", ""),
    )


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(name: str) -> Preset:
    """Load a shipped preset by name; unknown names list the known ones."""
    path = PRESET_DIR / f"{name}.json"
    if not path.is_file():
        raise KeyError(
            f"unknown model preset {name!r}; known presets: {', '.join(available_presets())}. "
            "Pass a preset name or a folder holding downloaded weights."
        )
    return preset_from_dict(json.loads(path.read_text()))
