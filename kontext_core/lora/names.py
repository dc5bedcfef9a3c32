"""Layer names: every LoRA format's module names -> our native (BFL) Linear and its row segment.

Derived from the checkpoint conversion tables (``kontext_core.checkpoint.tables``), so LoRA names
and weight names can never disagree. A diffusers module that is one piece of a fused native
Linear (``attn.to_k`` of ``img_attn.qkv``) maps to that Linear and the piece's index: its rows are
found from the model's configuration when the adapter is applied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..checkpoint.tables import (
    TRANSFORMER_DOUBLE,
    TRANSFORMER_GUIDANCE,
    TRANSFORMER_SINGLE,
    TRANSFORMER_TOP,
    Op,
)


@dataclass(frozen=True)
class Target:
    module: str  # native module name, e.g. "double_blocks.0.img_attn.qkv"
    segments: tuple[int, ...] | None = None  # row pieces of a fused Linear (table order); None: all rows
    swap_halves: bool = False  # diffusers [scale; shift] rows of native [shift; scale]


# scope -> {relative native module: {relative diffusers module: (segment or None, swap)}}
_Scope = dict[str, dict[str, tuple[int | None, bool]]]


def _linear_rows(rows) -> _Scope:
    out: _Scope = {}
    for row in rows:
        if "{p}" not in row.native:  # norm scales: not Linears
            continue
        native = row.native.replace(".{p}", "")
        targets = (row.diffusers,) if isinstance(row.diffusers, str) else row.diffusers
        pieces = out.setdefault(native, {})
        for index, target in enumerate(targets):
            segment = index if row.op is Op.CONCAT else None
            pieces[target.replace(".{p}", "")] = (segment, row.op is Op.SWAP_HALVES)
    return out


_TOP = _linear_rows(TRANSFORMER_TOP + TRANSFORMER_GUIDANCE)
_BLOCKS = {  # native block list -> (diffusers block list, relative rows)
    "double_blocks": ("transformer_blocks", _linear_rows(TRANSFORMER_DOUBLE)),
    "single_blocks": ("single_transformer_blocks", _linear_rows(TRANSFORMER_SINGLE)),
}
_NATIVE_BLOCK = re.compile(r"^(double_blocks|single_blocks)[._](\d+)[._](.+)$")
_DIFFUSERS_BLOCK = re.compile(r"^(transformer_blocks|single_transformer_blocks)[._](\d+)[._](.+)$")


def _match(rel: str, candidates, underscored: bool) -> str | None:
    for name in candidates:
        if rel == name or (underscored and rel == name.replace(".", "_")):
            return name
    return None


def native_target(name: str, underscored: bool = False) -> Target | None:
    """A native module name (``double_blocks.0.img_attn.qkv``; kohya's ``double_blocks_0_img_attn_qkv``
    when ``underscored``) -> Target, or None when it names no Linear of ours."""
    m = _NATIVE_BLOCK.match(name)
    if m:
        rel = _match(m.group(3), _BLOCKS[m.group(1)][1], underscored)
        return Target(f"{m.group(1)}.{m.group(2)}.{rel}") if rel else None
    rel = _match(name, _TOP, underscored)
    return Target(rel) if rel else None


def diffusers_target(name: str, underscored: bool = False) -> Target | None:
    """A diffusers module name (``transformer_blocks.0.attn.to_k``) -> Target, or None."""
    m = _DIFFUSERS_BLOCK.match(name)
    if m:
        native_list = next(k for k, (d, _) in _BLOCKS.items() if d == m.group(1))
        scope, prefix, rel = _BLOCKS[native_list][1], f"{native_list}.{m.group(2)}.", m.group(3)
    else:
        scope, prefix, rel = _TOP, "", name
    for native, pieces in scope.items():
        found = _match(rel, pieces, underscored)
        if found:
            segment, swap = pieces[found]
            return Target(prefix + native, None if segment is None else (segment,), swap)
    return None


def any_target(name: str, underscored: bool = False) -> Target | None:
    """Native names first, then diffusers names (they never collide)."""
    return native_target(name, underscored) or diffusers_target(name, underscored)
