"""Scene parameters and the compositor: background, contact shadow, product."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .palette import COLOURS, parse_background, render_background
from .products import EXTENTS, PRODUCTS, ProductLayer, product_layer

SHADOW_STRENGTH = 0.55  # darkening at the shadow's centre
_SHADOW_CUTOFF = 2.2  # squared normalised radius where the shadow ends (exactly zero beyond)


@dataclass(frozen=True)
class Scene:
    """Parameters that fully describe one product photo.

    Geometry is in fractions of the image side, so a scene renders at any size.
    """

    product: str  # one of PRODUCTS
    product_colour: str  # key of COLOURS
    background: str  # e.g. "solid:red", "gradient:blue-white", "stripes:green", "studio-white"
    shadow: bool = True  # soft contact shadow under the product
    cx: float = 0.5  # horizontal centre of the product
    base_y: float = 0.85  # where the product stands (its lowest row)
    height: float = 0.5  # product height
    aspect: float = 1.0  # horizontal stretch of the silhouette
    mirror: bool = False  # flip left/right (mug handle side, shoe toe direction)
    light_left: bool = True  # key light from the left (else from the right)

    def __post_init__(self) -> None:
        if self.product not in PRODUCTS:
            raise ValueError(f"Scene.product {self.product!r}: unknown; use one of {list(PRODUCTS)}")
        if self.product_colour not in COLOURS:
            raise ValueError(
                f"Scene.product_colour {self.product_colour!r}: unknown; use one of {list(COLOURS)}"
            )
        parse_background(self.background)
        if not (0.05 <= self.height <= 0.95 and 0.5 <= self.aspect <= 2.0):
            raise ValueError(
                f"Scene geometry height={self.height}, aspect={self.aspect}: out of range; "
                "use height in [0.05, 0.95] and aspect in [0.5, 2]"
            )
        if not (0.0 < self.cx < 1.0 and self.height < self.base_y <= 1.0):
            raise ValueError(
                f"Scene geometry cx={self.cx}, base_y={self.base_y}: the product would leave the "
                "image; use 0 < cx < 1 and height < base_y <= 1"
            )


def layer_for(scene: Scene, size: int) -> ProductLayer:
    """The colour-independent product pixels of a scene."""
    return product_layer(
        scene.product, scene.cx, scene.base_y, scene.height, scene.aspect,
        scene.mirror, scene.light_left, size,
    )


def shadow_alpha(scene: Scene, size: int) -> np.ndarray:
    """Contact-shadow opacity (size x size float32): a soft ellipse under the product base.

    It is exactly zero outside a bounded ellipse, so shadow edits touch only pixels near the base.
    """
    left, right = EXTENTS[scene.product]
    if scene.mirror:
        left, right = right, left
    unit = scene.height * scene.aspect
    away_from_light = 1.0 if scene.light_left else -1.0
    centre_x = scene.cx + (right - left) / 2 * unit + 0.04 * unit * away_from_light
    radius_x = (left + right) / 2 * unit * 1.1
    radius_y = 0.02 + 0.06 * scene.height
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    r2 = ((centres[None, :] - centre_x) / radius_x) ** 2 + (
        (centres[:, None] - scene.base_y) / radius_y
    ) ** 2
    floor = np.exp(-_SHADOW_CUTOFF)
    alpha = SHADOW_STRENGTH * np.clip((np.exp(-r2) - floor) / (1.0 - floor), 0.0, 1.0)
    return alpha.astype(np.float32)


def compose(scene: Scene, layer: ProductLayer, size: int) -> np.ndarray:
    """Render a scene whose product layer is already drawn (lets edits share one layer)."""
    image = render_background(scene.background, size)
    if scene.shadow:
        image = image * (1.0 - shadow_alpha(scene, size))[..., None]
    colour = np.asarray(COLOURS[scene.product_colour], dtype=np.float32)
    base = np.where(layer.body[..., None], colour, layer.fixed_rgb)
    lit = base * layer.shade[..., None]
    product = lit + layer.spec[..., None] * (255.0 - lit)
    image = np.where(layer.mask[..., None], product, image)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render(scene: Scene, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, product mask HxW bool) of a scene at size x size pixels."""
    if not isinstance(size, int) or size < 16:
        raise ValueError(f"render size {size!r}: too small or not an int; use an int >= 16")
    layer = layer_for(scene, size)
    return compose(scene, layer, size), layer.mask.copy()
