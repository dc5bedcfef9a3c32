"""Product silhouettes with shading: bottle, mug, box, shoe, can, vase.

Each shape is drawn analytically on the pixel-centre grid in product-local coordinates:
`a` runs horizontally in units of the product height (0 = product centre line, mirrored for
asymmetric products), `v` runs from 0 at the product top to 1 at its base. Every operation is a
numpy broadcast over (1, S) and (S, 1) arrays, so one product costs well under a millisecond.

Edges are deliberately not antialiased: a pixel is either product or not, which keeps the
mask exact and lets background/shadow edits leave every product pixel bit-identical.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

PRODUCTS = ("bottle", "mug", "box", "shoe", "can", "vase")

# Half extents (left, right) of each silhouette in units of its height, before aspect/mirror.
EXTENTS: dict[str, tuple[float, float]] = {
    "bottle": (0.22, 0.22),
    "mug": (0.43, 0.43),
    "box": (0.42, 0.42),
    "shoe": (0.96, 0.96),
    "can": (0.30, 0.30),
    "vase": (0.35, 0.35),
}

# Plausible product heights (fraction of the image height) for sampling.
HEIGHT_RANGE: dict[str, tuple[float, float]] = {
    "bottle": (0.50, 0.66),
    "mug": (0.36, 0.48),
    "box": (0.38, 0.50),
    "shoe": (0.28, 0.36),
    "can": (0.40, 0.54),
    "vase": (0.48, 0.64),
}

CAP_GREY = (45, 45, 50)
LABEL_WHITE = (236, 232, 220)
LID_SILVER = (200, 200, 206)
SOLE_WHITE = (238, 236, 228)


@dataclass(frozen=True)
class ProductLayer:
    """Everything about a product's pixels except its colour.

    mask: product pixels. body: the pixels that take the product colour (the rest are fixed
    parts such as a cap, label, lid or sole, coloured by `fixed_rgb`). shade multiplies the
    base colour; spec blends towards white (specular highlight).
    """

    mask: np.ndarray
    body: np.ndarray
    shade: np.ndarray
    spec: np.ndarray
    fixed_rgb: np.ndarray


@dataclass
class _Parts:
    mask: np.ndarray
    shade: np.ndarray
    spec: np.ndarray
    fixed: list[tuple[np.ndarray, tuple[int, int, int]]]


def _light(lx: float) -> np.ndarray:
    """Unit vector towards the key light: from the side lx (-1 left, +1 right), above, front."""
    vec = np.array([0.6 * lx, -0.35, 0.72])
    return vec / np.linalg.norm(vec)


def _shading(nx, ny, nz, lx: float, gloss: float, strength: float):
    """Lambert shade (ambient + diffuse) and a Blinn-Phong highlight for unit normals."""
    light = _light(lx)
    lambert = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
    half = light + np.array([0.0, 0.0, 1.0])
    half /= np.linalg.norm(half)
    facing = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0.0, 1.0)
    return 0.3 + 0.85 * lambert, strength * facing**gloss


def _cylinder(offset, half_width, lx: float, gloss: float, strength: float):
    """Shading of a vertical cylinder; offset/half_width is the horizontal normal component."""
    nx = np.clip(offset / half_width, -1.0, 1.0)
    return _shading(nx, 0.0, np.sqrt(1.0 - nx * nx), lx, gloss, strength)


def _ellipse(a, v, ca: float, cv: float, ra: float, rv: float):
    return ((a - ca) / ra) ** 2 + ((v - cv) / rv) ** 2 <= 1.0


def _bottle(a, v, lx):
    hw = np.interp(
        v, [0.0, 0.1, 0.1001, 0.3, 0.38, 0.46, 0.93, 1.0],
        [0.1, 0.1, 0.075, 0.075, 0.16, 0.22, 0.22, 0.17],
    )
    mask = (np.abs(a) <= hw) & (v >= 0.0) & (v <= 1.0)
    shade, spec = _cylinder(a, hw, lx, gloss=30, strength=0.65)
    cap = mask & (v < 0.1)
    label = mask & (v > 0.55) & (v < 0.8)
    return _Parts(mask, shade, spec, [(cap, CAP_GREY), (label, LABEL_WHITE)])


def _mug(a, v, lx):
    a0, r, rim = -0.1, 0.33, 0.05
    wall = (np.abs(a - a0) <= r) & (v >= rim) & (v <= 0.97)
    top = _ellipse(a, v, a0, rim, r, rim)
    bottom = _ellipse(a, v, a0, 0.97, r, 0.03)
    inside = _ellipse(a, v, a0, rim, r - 0.035, rim - 0.015)
    hx, hv = a0 + r, 0.48
    handle = (
        _ellipse(a, v, hx, hv, 0.2, 0.27) & ~_ellipse(a, v, hx, hv, 0.1, 0.16) & (a > hx - 0.02)
    )
    body = wall | top | bottom
    mask = body | handle
    shade, spec = _cylinder(a - a0, r, lx, gloss=25, strength=0.55)
    h_shade, h_spec = _cylinder(a - hx, 0.2, lx, gloss=25, strength=0.3)
    shade = np.where(handle & ~body, h_shade, shade)
    spec = np.where(handle & ~body, h_spec, spec)
    shade = np.where(inside, 0.3 + 0.15 * (v / rim), shade)
    spec = np.where(inside, 0.0, spec)
    return _Parts(mask, shade, spec, [])


def _box(a, v, lx):
    front = (a >= -0.42) & (a <= 0.26) & (v >= 0.22) & (v <= 1.0)
    back = (0.22 - v) / 0.22  # 0 on the front top edge, 1 on the back top edge
    top = (v >= 0.0) & (v < 0.22) & (a >= -0.42 + 0.16 * back) & (a <= 0.26 + 0.16 * back)
    depth = (a - 0.26) / 0.16
    side = (a > 0.26) & (a <= 0.42) & (v >= 0.22 - 0.22 * depth) & (v <= 1.0 - 0.22 * depth)
    mask = front | top | side
    k = 1.0 / np.hypot(0.9, 0.44)
    front_shade, _ = _shading(0.0, 0.0, 1.0, lx, 1, 0.0)
    top_shade, _ = _shading(0.0, -0.9 * k, 0.44 * k, lx, 1, 0.0)
    side_shade, _ = _shading(0.9 * k, 0.0, 0.44 * k, lx, 1, 0.0)
    shade = np.where(top, top_shade, np.where(side, side_shade, front_shade * (1.06 - 0.12 * v)))
    label = front & (a >= -0.3) & (a <= -0.02) & (v >= 0.42) & (v <= 0.62)
    return _Parts(mask, shade, np.zeros_like(shade), [(label, LABEL_WHITE)])


def _shoe(a, v, lx):
    # Side view, toe to the right: the top outline is a polyline over `a` (heel, collar, toe).
    top = np.interp(a, [-0.92, -0.86, -0.55, -0.2, 0.3, 0.75, 0.95],
                    [0.3, 0.04, 0.0, 0.12, 0.42, 0.6, 0.86])
    upper = (a >= -0.92) & (a <= 0.95) & (v >= top) & (v < 0.84)
    sole = (a / 0.96) ** 4 + ((v - 0.92) / 0.08) ** 4 <= 1.0
    mask = upper | sole
    nx = np.clip((a - 0.05) / 1.0, -1.0, 1.0)
    ny = np.clip((v - 0.84) / 0.9, -1.0, 1.0)
    nz = np.sqrt(np.clip(1.0 - nx * nx - ny * ny, 0.05, 1.0))
    shade, spec = _shading(nx, ny, nz, lx, gloss=12, strength=0.35)
    collar = upper & _ellipse(a, v, -0.5, 0.06, 0.3, 0.07)
    shade = np.where(collar, 0.25, shade)
    spec = np.where(collar, 0.0, spec)
    band = upper & (a >= -0.6) & (a <= 0.5) & (np.abs(v - (0.62 - 0.12 * (a + 0.5))) < 0.035)
    return _Parts(mask, shade, spec, [(sole & ~upper, SOLE_WHITE), (band, SOLE_WHITE)])


def _can(a, v, lx):
    r, e = 0.3, 0.08
    wall = (np.abs(a) <= r) & (v >= e) & (v <= 1.0 - e)
    lid = _ellipse(a, v, 0.0, e, r, e)
    bottom = _ellipse(a, v, 0.0, 1.0 - e, r, e)
    mask = wall | lid | bottom
    shade, spec = _cylinder(a, r, lx, gloss=40, strength=0.7)
    k = 1.0 / np.hypot(0.9, 0.44)
    lid_shade, _ = _shading(0.0, -0.9 * k, 0.44 * k, lx, 1, 0.0)
    rim = ~_ellipse(a, v, 0.0, e, r * 0.85, e * 0.8)
    shade = np.where(lid, np.where(rim, lid_shade * 0.8, lid_shade), shade)
    spec = np.where(lid, 0.0, spec)
    return _Parts(mask, shade, spec, [(lid, LID_SILVER)])


def _vase(a, v, lx):
    hw = 0.11 + 0.24 * np.exp(-(((v - 0.62) / 0.24) ** 2))
    hw = np.where(v < 0.05, 0.16, hw)  # lip
    mask = (np.abs(a) <= hw) & (v >= 0.0) & (v <= 1.0)
    shade, spec = _cylinder(a, hw, lx, gloss=25, strength=0.5)
    mouth = mask & _ellipse(a, v, 0.0, 0.0, 0.12, 0.035)
    shade = np.where(mouth, 0.25, shade)
    return _Parts(mask, shade, spec, [])


_SHAPES: dict[str, Callable[..., _Parts]] = {
    "bottle": _bottle, "mug": _mug, "box": _box, "shoe": _shoe, "can": _can, "vase": _vase,
}


def product_layer(
    kind: str, cx: float, base_y: float, height: float, aspect: float,
    mirror: bool, light_left: bool, size: int,
) -> ProductLayer:
    """Draw one product on a size x size grid (geometry in fractions of the image side)."""
    if kind not in _SHAPES:
        raise ValueError(f"product {kind!r}: unknown kind; use one of {list(PRODUCTS)}")
    centres = (np.arange(size, dtype=np.float32) + 0.5) / size
    flip = -1.0 if mirror else 1.0
    a = (flip * (centres - cx) / (height * aspect))[None, :]
    v = ((centres - (base_y - height)) / height)[:, None]
    lx = (-1.0 if light_left else 1.0) * flip  # light side in local (possibly mirrored) coords
    parts = _SHAPES[kind](a, v, lx)
    mask = np.broadcast_to(parts.mask, (size, size))
    fixed_rgb = np.zeros((size, size, 3), dtype=np.float32)
    body = mask.copy()
    for region, rgb in parts.fixed:
        region = np.broadcast_to(region, (size, size)) & mask
        fixed_rgb[region] = rgb
        body &= ~region
    shade = np.broadcast_to(np.asarray(parts.shade, dtype=np.float32), (size, size))
    spec = np.broadcast_to(np.asarray(parts.spec, dtype=np.float32), (size, size))
    return ProductLayer(np.ascontiguousarray(mask), body, shade, spec, fixed_rgb)
