"""The demo catalog's content: six product scenes and the edits the tiny model knows, with exact
expected results. `make run` edits this catalog by default; the files (photos, catalog.csv,
manifest) are written by `python -m pipeline.demo_catalog manifests/examples/demo`.
"""

from __future__ import annotations

from dataclasses import replace

from .instructions import background_instruction, phrase
from .sampling import Example
from .scene import Scene, compose, layer_for

DEMO_SIZE = 128
FIRST_SEED = 1001

# product_id -> the catalog photo (studio shots, like a typical shop).
DEMO_PRODUCTS: dict[str, Scene] = {
    "p01-bottle": Scene("bottle", "red", "studio-white", True, 0.5, 0.86, 0.62, 1.0, False, True),
    "p02-mug": Scene("mug", "blue", "studio-white", True, 0.5, 0.82, 0.44, 1.0, False, True),
    "p03-box": Scene("box", "orange", "studio-white", True, 0.5, 0.84, 0.46, 1.0, False, True),
    "p04-shoe": Scene("shoe", "black", "studio-white", True, 0.5, 0.82, 0.32, 1.0, False, True),
    "p05-can": Scene("can", "green", "studio-white", False, 0.5, 0.84, 0.5, 1.0, False, False),
    "p06-vase": Scene("vase", "purple", "gradient:grey-white", True, 0.5, 0.87, 0.6, 1.0, False, True),
}

# (product_id, edit kind, target: background name / colour / "", phrasing number, variant)
DEMO_EDITS: tuple[tuple[str, str, str, int, str], ...] = (
    ("p01-bottle", "background", "solid:blue", 0, "bg-solid-blue"),
    ("p01-bottle", "recolour", "green", 0, "colour-green"),
    ("p01-bottle", "background", "solid:purple", 2, "bg-solid-purple"),
    ("p02-mug", "background", "solid:yellow", 1, "bg-solid-yellow"),
    ("p02-mug", "recolour", "red", 1, "colour-red"),
    ("p03-box", "background", "solid:green", 2, "bg-solid-green"),
    ("p03-box", "recolour", "blue", 0, "colour-blue"),
    ("p04-shoe", "background", "solid:pink", 1, "bg-solid-pink"),
    ("p04-shoe", "recolour", "red", 2, "colour-red"),
    ("p05-can", "recolour", "blue", 1, "colour-blue"),
    ("p05-can", "background", "solid:orange", 0, "bg-solid-orange"),
    ("p05-can", "recolour", "red", 3, "colour-red"),
    ("p06-vase", "background", "studio-white", 0, "bg-studio-white"),
    ("p06-vase", "recolour", "yellow", 4, "colour-yellow"),
    ("p06-vase", "background", "gradient:blue-white", 0, "bg-gradient-blue-white"),
)


def _edit(source: Scene, kind: str, value: str, choice: int) -> tuple[Scene, str]:
    if kind == "background":
        return replace(source, background=value), background_instruction(
            value, source.product, choice
        )
    if kind == "recolour":
        return replace(source, product_colour=value), phrase(
            "recolour", choice, source.product, (value,)
        )
    if kind in ("add-shadow", "remove-shadow"):
        return replace(source, shadow=kind == "add-shadow"), phrase(kind, choice, source.product)
    raise ValueError(f"demo edit kind {kind!r}: unknown")


def demo_photo(product_id: str, size: int = DEMO_SIZE):
    """The demo product photo (HxWx3 uint8) of ``product_id``."""
    scene = DEMO_PRODUCTS[product_id]
    return compose(scene, layer_for(scene, size), size)


def image_path(product_id: str) -> str:
    """Path of a product photo relative to the manifest folder."""
    return f"images/{product_id}.png"


def demo_examples(size: int = DEMO_SIZE) -> list[tuple[dict[str, object], Example]]:
    """Manifest rows of the demo with their exact expected results (for evaluation)."""
    out = []
    for index, (product_id, kind, value, choice, variant) in enumerate(DEMO_EDITS):
        source_scene = DEMO_PRODUCTS[product_id]
        target_scene, instruction = _edit(source_scene, kind, value, choice)
        layer = layer_for(source_scene, size)
        example = Example(
            compose(source_scene, layer, size), compose(target_scene, layer, size),
            instruction, kind, layer.mask.copy(), source_scene, target_scene,
        )
        row = {
            "image": image_path(product_id),
            "instruction": instruction,
            "seed": FIRST_SEED + index,
            "row_id": f"demo-{index + 1:03d}",
            "product_id": product_id,
            "variant": variant,
        }
        out.append((row, example))
    return out
