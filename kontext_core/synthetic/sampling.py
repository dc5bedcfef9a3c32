"""Random edit examples with exact targets, and train/eval streams that never overlap.

Disjointness works in two layers:
1. The RNG of `sample_batch(seed, n, split=...)` is seeded from SeedSequence([split_id, seed]),
   so train and eval draw independent streams.
2. Independent streams could still collide by chance, so each example is also assigned to a
   split by content: a BLAKE2b hash of (source pixels, instruction) decides its split, and a
   stream keeps only examples of its own split (rejection sampling, about two tries per
   example). Therefore no (source, instruction) pair can ever appear in both splits (at a
   given image size: the hash is over the rendered pixels).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from .instructions import background_instruction, phrase
from .palette import (
    COLOURS,
    PATTERN_COLOURS,
    STUDIO_WHITE,
    background_colours,
)
from .products import EXTENTS, HEIGHT_RANGE, PRODUCTS
from .scene import Scene, compose, layer_for

EDIT_KINDS = ("background", "recolour", "add-shadow", "remove-shadow")
KIND_WEIGHTS = {"background": 0.4, "recolour": 0.3, "add-shadow": 0.15, "remove-shadow": 0.15}
SPLITS = {"train": 0, "eval": 1}

# How often each background form is drawn (solid colours are what catalogs mostly ask for).
_BACKGROUND_FORM_WEIGHTS = {
    "solid": 0.4, "gradient": 0.2, "stripes": 0.1, "checker": 0.1, "dots": 0.1, "studio": 0.1,
}
_COLOUR_NAMES = tuple(COLOURS)
_MAX_TRIES = 200


@dataclass
class Example:
    """One edit: source photo, instruction, and the exact target photo."""

    source: np.ndarray  # HxWx3 uint8
    target: np.ndarray  # HxWx3 uint8, exact result of the edit
    instruction: str
    edit_kind: str  # "background" | "recolour" | "add-shadow" | "remove-shadow"
    mask: np.ndarray  # HxW bool, product pixels (same in source and target)
    source_scene: Scene
    target_scene: Scene


def split_of(source: np.ndarray, instruction: str) -> str:
    """The split a (source pixels, instruction) pair belongs to, by content hash."""
    digest = hashlib.blake2b(source.tobytes(), digest_size=8)
    digest.update(instruction.encode())
    return "eval" if digest.digest()[0] & 1 else "train"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def sample_background(
    rng: np.random.Generator, avoid_colours: frozenset[str] = frozenset(), exclude: str = ""
) -> str:
    """A random background whose colours avoid `avoid_colours` and which is not `exclude`."""
    forms = list(_BACKGROUND_FORM_WEIGHTS)
    weights = np.array(list(_BACKGROUND_FORM_WEIGHTS.values()))
    for _ in range(_MAX_TRIES):
        form = forms[int(rng.choice(len(forms), p=weights / weights.sum()))]
        if form == "studio":
            name = STUDIO_WHITE
        elif form == "solid":
            name = f"solid:{_pick(rng, _COLOUR_NAMES)}"
        elif form == "gradient":
            top, bottom = rng.choice(len(_COLOUR_NAMES), size=2, replace=False)
            name = f"gradient:{_COLOUR_NAMES[top]}-{_COLOUR_NAMES[bottom]}"
        else:
            name = f"{form}:{_pick(rng, PATTERN_COLOURS)}"
        if name != exclude and not (background_colours(name) & avoid_colours):
            return name
    raise RuntimeError(f"no background avoids colours {sorted(avoid_colours)}")  # unreachable


def sample_scene(rng: np.random.Generator, shadow: bool | None = None) -> Scene:
    """A random product photo (product colour never matches the background's colours)."""
    product = _pick(rng, PRODUCTS)
    colour = _pick(rng, _COLOUR_NAMES)
    background = sample_background(rng, avoid_colours=frozenset({colour}))
    low, high = HEIGHT_RANGE[product]
    height = round(float(rng.uniform(low, high)), 3)
    aspect = round(float(rng.uniform(0.88, 1.12)), 3)
    half_width = max(EXTENTS[product]) * height * aspect
    margin = max(0.0, min(0.1, 0.47 - half_width))  # keep the product inside the frame
    return Scene(
        product=product,
        product_colour=colour,
        background=background,
        shadow=bool(rng.random() < 0.6) if shadow is None else shadow,
        cx=round(float(rng.uniform(0.5 - margin, 0.5 + margin)), 3),
        base_y=round(float(rng.uniform(0.8, 0.9)), 3),
        height=height,
        aspect=aspect,
        mirror=bool(rng.random() < 0.5),
        light_left=bool(rng.random() < 0.7),
    )


def plan_edit(rng: np.random.Generator, kind: str) -> tuple[Scene, Scene, str]:
    """(source scene, target scene, instruction) for one random edit of the given kind."""
    if kind == "add-shadow":
        source = sample_scene(rng, shadow=False)
        target = replace(source, shadow=True)
        instruction = phrase("add-shadow", int(rng.integers(1 << 16)), source.product)
    elif kind == "remove-shadow":
        source = sample_scene(rng, shadow=True)
        target = replace(source, shadow=False)
        instruction = phrase("remove-shadow", int(rng.integers(1 << 16)), source.product)
    elif kind == "recolour":
        source = sample_scene(rng)
        blocked = background_colours(source.background) | {source.product_colour}
        colour = _pick(rng, [c for c in _COLOUR_NAMES if c not in blocked])
        target = replace(source, product_colour=colour)
        instruction = phrase("recolour", int(rng.integers(1 << 16)), source.product, (colour,))
    elif kind == "background":
        source = sample_scene(rng)
        background = sample_background(
            rng, avoid_colours=frozenset({source.product_colour}), exclude=source.background
        )
        target = replace(source, background=background)
        choice = int(rng.integers(1 << 16))
        instruction = background_instruction(background, source.product, choice)
    else:
        raise ValueError(f"edit kind {kind!r}: unknown; use one of {list(EDIT_KINDS)}")
    return source, target, instruction


def _check_kinds(kinds: Sequence[str] | None) -> tuple[list[str], np.ndarray]:
    chosen = list(EDIT_KINDS if kinds is None else kinds)
    unknown = [k for k in chosen if k not in EDIT_KINDS]
    if not chosen or unknown:
        raise ValueError(
            f"edit kinds {unknown or chosen!r}: unknown or empty; choose from {list(EDIT_KINDS)}"
        )
    weights = np.array([KIND_WEIGHTS[k] for k in chosen])
    return chosen, weights / weights.sum()


def _check_split(split: str | None) -> None:
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r}: unknown; use one of {list(SPLITS)}")


def sample_example(
    rng: np.random.Generator,
    size: int = 64,
    kinds: Sequence[str] | None = None,
    split: str | None = None,
) -> Example:
    """One random edit example at size x size; if `split` is given, only from that split."""
    chosen, weights = _check_kinds(kinds)
    _check_split(split)
    for _ in range(_MAX_TRIES):
        kind = chosen[int(rng.choice(len(chosen), p=weights))]
        source_scene, target_scene, instruction = plan_edit(rng, kind)
        layer = layer_for(source_scene, size)  # geometry is shared by source and target
        source = compose(source_scene, layer, size)
        if split is not None and split_of(source, instruction) != split:
            continue
        target = compose(target_scene, layer, size)
        return Example(
            source, target, instruction, kind, layer.mask.copy(), source_scene, target_scene
        )
    raise RuntimeError(f"no {split} example in {_MAX_TRIES} tries")  # probability ~2**-200


def split_rng(seed: int, split: str = "train") -> np.random.Generator:
    """The generator behind `sample_batch(seed, ..., split=split)`."""
    _check_split(split)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed {seed!r}: must be an int >= 0")
    return np.random.default_rng(np.random.SeedSequence([SPLITS[split], int(seed)]))


def sample_batch(
    seed: int,
    n: int,
    size: int = 64,
    split: str = "train",
    kinds: Sequence[str] | None = None,
) -> list[Example]:
    """n examples, fully determined by (seed, split, size, kinds).

    The first k examples of a batch do not depend on n. Train and eval never share a
    (source, instruction) pair (see the module docstring).
    """
    rng = split_rng(seed, split)
    return [sample_example(rng, size, kinds, split) for _ in range(n)]


def batch_arrays(examples: Sequence[Example]) -> dict[str, object]:
    """Stack examples: sources/targets N x H x W x 3 uint8, masks N x H x W, instructions list."""
    return {
        "sources": np.stack([e.source for e in examples]),
        "targets": np.stack([e.target for e in examples]),
        "masks": np.stack([e.mask for e in examples]),
        "instructions": [e.instruction for e in examples],
        "edit_kinds": [e.edit_kind for e in examples],
    }

