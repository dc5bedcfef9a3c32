"""Key conversion between our native (BFL-named) weights and diffusers', as tables.

Each table row maps one native parameter to one or more diffusers parameters with one operation:

- ``COPY``: same tensor under another name.
- ``CONCAT``: the native tensor is the diffusers pieces concatenated along dim 0 (fused qkv;
  single-block ``linear1`` = to_q | to_k | to_v | proj_mlp).
- ``SWAP_HALVES``: native [shift; scale] is diffusers [scale; shift] (final-layer modulation).
- ``CONV1X1``: native 1×1 conv [O, I, 1, 1] is a diffusers Linear [O, I] (AE mid attention).

Templates use ``{p}`` for "weight and bias" and ``{n}``/``{i}``/``{j}`` for block indices; the
``*_rules`` functions expand them for one configuration. The same rules drive both directions:
:func:`to_native` (loading diffusers files) and :func:`to_diffusers` (writing them, tests).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from ..config import AutoencoderConfig, TransformerConfig
from .errors import CheckpointError


class Op(enum.Enum):
    COPY = "copy"
    CONCAT = "concat"
    SWAP_HALVES = "swap_halves"
    CONV1X1 = "conv1x1"


@dataclass(frozen=True)
class Rule:
    """One native parameter and the diffusers parameter(s) it is made of."""

    native: str
    diffusers: tuple[str, ...]
    op: Op = Op.COPY
    sizes: tuple[int, ...] = ()  # CONCAT: rows (dim 0) of each diffusers piece, in order

    def diffusers_shapes(self, native_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Shapes the diffusers pieces must have for a native tensor of ``native_shape``."""
        if self.op is Op.CONCAT:
            return [(rows, *native_shape[1:]) for rows in self.sizes]
        if self.op is Op.CONV1X1 and len(native_shape) == 4:
            return [native_shape[:2]]
        return [native_shape]

    def fill_native(self, out: torch.Tensor, read: Callable[[str], torch.Tensor]) -> None:
        """Write the native tensor into ``out``, reading the diffusers pieces one at a time."""
        if self.op is Op.CONCAT:
            start = 0
            for key, rows in zip(self.diffusers, self.sizes, strict=True):
                out[start : start + rows].copy_(read(key))
                start += rows
        elif self.op is Op.SWAP_HALVES:
            piece = read(self.diffusers[0])
            half = out.shape[0] // 2
            out[:half].copy_(piece[half:])
            out[half:].copy_(piece[:half])
        else:  # COPY, CONV1X1
            out.copy_(read(self.diffusers[0]).reshape(out.shape))

    def to_native(self, pieces: Mapping[str, torch.Tensor], native_shape: tuple[int, ...]) -> torch.Tensor:
        """The native tensor; for COPY/CONV1X1 a view of the diffusers tensor (no extra memory)."""
        first = pieces[self.diffusers[0]]
        if self.op in (Op.COPY, Op.CONV1X1):
            return first.reshape(native_shape)
        out = torch.empty(native_shape, dtype=first.dtype, device=first.device)
        self.fill_native(out, pieces.__getitem__)
        return out

    def to_diffusers(self, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.op is Op.CONCAT:
            if sum(self.sizes) != tensor.shape[0]:
                raise CheckpointError(
                    f"native key {self.native!r} has {tensor.shape[0]} rows, expected {sum(self.sizes)} "
                    f"(pieces {self.sizes})"
                )
            return dict(zip(self.diffusers, (p.clone() for p in torch.split(tensor, list(self.sizes))), strict=True))
        if self.op is Op.SWAP_HALVES:
            half = tensor.shape[0] // 2
            return {self.diffusers[0]: torch.cat((tensor[half:], tensor[:half]))}
        shape = self.diffusers_shapes(tuple(tensor.shape))[0]
        return {self.diffusers[0]: tensor.reshape(shape).clone()}


@dataclass(frozen=True)
class _T:
    """A table row before expansion: templates plus symbolic CONCAT sizes."""

    native: str
    diffusers: str | tuple[str, ...]
    op: Op = Op.COPY
    sizes: tuple[str, ...] = ()


_QKV = ("hidden", "hidden", "hidden")

# --- Transformer -----------------------------------------------------------------------------

TRANSFORMER_TOP = (
    _T("img_in.{p}", "x_embedder.{p}"),
    _T("txt_in.{p}", "context_embedder.{p}"),
    _T("time_in.in_layer.{p}", "time_text_embed.timestep_embedder.linear_1.{p}"),
    _T("time_in.out_layer.{p}", "time_text_embed.timestep_embedder.linear_2.{p}"),
    _T("vector_in.in_layer.{p}", "time_text_embed.text_embedder.linear_1.{p}"),
    _T("vector_in.out_layer.{p}", "time_text_embed.text_embedder.linear_2.{p}"),
    _T("final_layer.linear.{p}", "proj_out.{p}"),
    _T("final_layer.adaLN_modulation.1.{p}", "norm_out.linear.{p}", Op.SWAP_HALVES),
)
TRANSFORMER_GUIDANCE = (
    _T("guidance_in.in_layer.{p}", "time_text_embed.guidance_embedder.linear_1.{p}"),
    _T("guidance_in.out_layer.{p}", "time_text_embed.guidance_embedder.linear_2.{p}"),
)
# Relative to "double_blocks.{n}." / "transformer_blocks.{n}.".
TRANSFORMER_DOUBLE = (
    _T("img_mod.lin.{p}", "norm1.linear.{p}"),
    _T("txt_mod.lin.{p}", "norm1_context.linear.{p}"),
    _T("img_attn.qkv.{p}", ("attn.to_q.{p}", "attn.to_k.{p}", "attn.to_v.{p}"), Op.CONCAT, _QKV),
    _T("txt_attn.qkv.{p}", ("attn.add_q_proj.{p}", "attn.add_k_proj.{p}", "attn.add_v_proj.{p}"), Op.CONCAT, _QKV),
    _T("img_attn.norm.query_norm.scale", "attn.norm_q.weight"),
    _T("img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
    _T("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
    _T("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"),
    _T("img_attn.proj.{p}", "attn.to_out.0.{p}"),
    _T("txt_attn.proj.{p}", "attn.to_add_out.{p}"),
    _T("img_mlp.0.{p}", "ff.net.0.proj.{p}"),
    _T("img_mlp.2.{p}", "ff.net.2.{p}"),
    _T("txt_mlp.0.{p}", "ff_context.net.0.proj.{p}"),
    _T("txt_mlp.2.{p}", "ff_context.net.2.{p}"),
)
# Relative to "single_blocks.{n}." / "single_transformer_blocks.{n}.".
TRANSFORMER_SINGLE = (
    _T("modulation.lin.{p}", "norm.linear.{p}"),
    _T("linear1.{p}", ("attn.to_q.{p}", "attn.to_k.{p}", "attn.to_v.{p}", "proj_mlp.{p}"), Op.CONCAT,
       (*_QKV, "mlp")),
    _T("norm.query_norm.scale", "attn.norm_q.weight"),
    _T("norm.key_norm.scale", "attn.norm_k.weight"),
    _T("linear2.{p}", "proj_out.{p}"),
)

# --- Autoencoder -----------------------------------------------------------------------------

AE_TOP = (
    _T("encoder.conv_in.{p}", "encoder.conv_in.{p}"),
    _T("encoder.norm_out.{p}", "encoder.conv_norm_out.{p}"),
    _T("encoder.conv_out.{p}", "encoder.conv_out.{p}"),
    _T("decoder.conv_in.{p}", "decoder.conv_in.{p}"),
    _T("decoder.norm_out.{p}", "decoder.conv_norm_out.{p}"),
    _T("decoder.conv_out.{p}", "decoder.conv_out.{p}"),
)
# Relative to a resnet block: BFL "…block.{j}." / diffusers "…resnets.{j}.".
AE_RESNET = (
    _T("norm1.{p}", "norm1.{p}"),
    _T("conv1.{p}", "conv1.{p}"),
    _T("norm2.{p}", "norm2.{p}"),
    _T("conv2.{p}", "conv2.{p}"),
)
AE_RESNET_SHORTCUT = (_T("nin_shortcut.{p}", "conv_shortcut.{p}"),)
# Relative to "{encoder,decoder}.mid." / "{encoder,decoder}.mid_block.".
AE_MID = (
    _T("attn_1.norm.{p}", "attentions.0.group_norm.{p}"),
    _T("attn_1.q.{p}", "attentions.0.to_q.{p}", Op.CONV1X1),
    _T("attn_1.k.{p}", "attentions.0.to_k.{p}", Op.CONV1X1),
    _T("attn_1.v.{p}", "attentions.0.to_v.{p}", Op.CONV1X1),
    _T("attn_1.proj_out.{p}", "attentions.0.to_out.0.{p}", Op.CONV1X1),
)
AE_DOWNSAMPLE = (_T("downsample.conv.{p}", "downsamplers.0.conv.{p}"),)
AE_UPSAMPLE = (_T("upsample.conv.{p}", "upsamplers.0.conv.{p}"),)


def _expand(rows: Iterable[_T], native_prefix: str = "", diffusers_prefix: str = "",
            sizes: Mapping[str, int] | None = None, skip_bias: Callable[[str], bool] = lambda _: False
            ) -> list[Rule]:
    rules = []
    for row in rows:
        targets = (row.diffusers,) if isinstance(row.diffusers, str) else row.diffusers
        params = ("weight", "bias") if "{p}" in row.native else ("",)
        for p in params:
            native = native_prefix + row.native.format(p=p)
            if p == "bias" and skip_bias(native):
                continue
            rules.append(Rule(
                native=native,
                diffusers=tuple(diffusers_prefix + t.format(p=p) for t in targets),
                op=row.op,
                sizes=tuple((sizes or {})[s] for s in row.sizes),
            ))
    return rules


def transformer_rules(cfg: TransformerConfig) -> list[Rule]:
    """All rules for a transformer of this shape, one per native parameter."""
    sizes = {"hidden": cfg.hidden_size, "mlp": cfg.mlp_hidden}

    def no_qkv_bias(native: str) -> bool:
        return not cfg.qkv_bias and native.endswith("qkv.bias")

    rules = _expand(TRANSFORMER_TOP)
    if cfg.guidance_embed:
        rules += _expand(TRANSFORMER_GUIDANCE)
    for n in range(cfg.depth):
        rules += _expand(TRANSFORMER_DOUBLE, f"double_blocks.{n}.", f"transformer_blocks.{n}.", sizes, no_qkv_bias)
    for n in range(cfg.depth_single_blocks):
        rules += _expand(TRANSFORMER_SINGLE, f"single_blocks.{n}.", f"single_transformer_blocks.{n}.", sizes)
    return rules


def _resnet(native_prefix: str, diffusers_prefix: str, channels_in: int, channels_out: int) -> list[Rule]:
    rows = AE_RESNET + (AE_RESNET_SHORTCUT if channels_in != channels_out else ())
    return _expand(rows, native_prefix, diffusers_prefix)


def autoencoder_rules(cfg: AutoencoderConfig) -> list[Rule]:
    """All rules for an autoencoder of this shape. Decoder levels are reversed: BFL ``up.{L-1-i}``
    is diffusers ``up_blocks.{i}``."""
    widths = [cfg.ch * m for m in cfg.ch_mult]
    levels = len(widths)
    rules = _expand(AE_TOP)
    block_in = cfg.ch
    for i, width in enumerate(widths):
        for j in range(cfg.num_res_blocks):
            rules += _resnet(f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}.", block_in, width)
            block_in = width
        if i < levels - 1:
            rules += _expand(AE_DOWNSAMPLE, f"encoder.down.{i}.", f"encoder.down_blocks.{i}.")
    for part in ("encoder", "decoder"):
        mid = widths[-1]
        rules += _resnet(f"{part}.mid.block_1.", f"{part}.mid_block.resnets.0.", mid, mid)
        rules += _expand(AE_MID, f"{part}.mid.", f"{part}.mid_block.")
        rules += _resnet(f"{part}.mid.block_2.", f"{part}.mid_block.resnets.1.", mid, mid)
    block_in = widths[-1]
    for level in reversed(range(levels)):
        i = levels - 1 - level
        for j in range(cfg.num_res_blocks + 1):
            rules += _resnet(f"decoder.up.{level}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}.", block_in,
                             widths[level])
            block_in = widths[level]
        if level > 0:
            rules += _expand(AE_UPSAMPLE, f"decoder.up.{level}.", f"decoder.up_blocks.{i}.")
    return rules


def _check_keys(have: Iterable[str], want: Iterable[str], what: str) -> None:
    have, want = set(have), set(want)
    missing, unexpected = sorted(want - have), sorted(have - want)
    if missing:
        raise CheckpointError(f"{what}: {len(missing)} key(s) missing, e.g. {missing[:3]}")
    if unexpected:
        raise CheckpointError(f"{what}: {len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}: "
                              "is this the right model / configuration?")


def to_diffusers(state: Mapping[str, torch.Tensor], rules: list[Rule]) -> dict[str, torch.Tensor]:
    """Native (BFL-named) state dict -> diffusers state dict."""
    _check_keys(state, (r.native for r in rules), "native state dict")
    out: dict[str, torch.Tensor] = {}
    for rule in rules:
        out.update(rule.to_diffusers(state[rule.native]))
    return out


def to_native(state: Mapping[str, torch.Tensor], rules: list[Rule],
              native_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Diffusers state dict -> native state dict; ``native_shapes`` from the target module.

    Renamed tensors are shared with ``state`` (no copy); fused ones are new tensors.
    """
    _check_keys(state, (k for r in rules for k in r.diffusers), "diffusers state dict")
    out = {}
    for rule in rules:
        shape = tuple(native_shapes[rule.native])
        for key, want in zip(rule.diffusers, rule.diffusers_shapes(shape), strict=True):
            if tuple(state[key].shape) != want:
                raise CheckpointError(f"diffusers state dict: key {key!r} has shape {tuple(state[key].shape)}, "
                                      f"expected {want}")
        out[rule.native] = rule.to_native(state, shape)
    return out
