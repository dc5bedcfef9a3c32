"""Named colours and the background vocabulary (solid, gradient, stripes, checker, dots, studio).

A background is fully determined by its name and the image size, so an instruction such as
"use a green striped background" has exactly one correct target. Renders are cached because
training asks for the same few hundred backgrounds over and over.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# The colour vocabulary. Values are chosen to stay distinct from each other after shading.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (205, 35, 40),
    "orange": (240, 130, 25),
    "yellow": (240, 205, 35),
    "green": (40, 150, 65),
    "blue": (40, 85, 205),
    "purple": (125, 55, 165),
    "pink": (240, 125, 175),
    "white": (245, 245, 245),
    "black": (28, 28, 32),
    "grey": (130, 130, 130),
}

BACKGROUND_KINDS = ("solid", "gradient", "stripes", "checker", "dots", "studio")
STUDIO_WHITE = "studio-white"

# Patterns alternate the named colour with this white; white-on-white patterns are excluded.
PATTERN_GROUND = (245, 245, 245)
PATTERN_CELLS = 8  # stripes / checker cells / dot grid per image side, at every size
PATTERN_COLOURS = tuple(c for c in COLOURS if c != "white")


def parse_background(name: str) -> tuple[str, tuple[str, ...]]:
    """Split a background name into (kind, colour names); raise ValueError naming the fix."""
    if name == STUDIO_WHITE:
        return "studio", ()
    kind, sep, rest = name.partition(":")
    if not sep or kind not in BACKGROUND_KINDS or kind == "studio":
        raise ValueError(
            f"background {name!r}: unknown form; use 'solid:C', 'gradient:C1-C2', "
            f"'stripes:C', 'checker:C', 'dots:C' or '{STUDIO_WHITE}' with C in {sorted(COLOURS)}"
        )
    colours = tuple(rest.split("-")) if kind == "gradient" else (rest,)
    if kind == "gradient" and (len(colours) != 2 or colours[0] == colours[1]):
        raise ValueError(
            f"background {name!r}: a gradient needs two different colours, e.g. 'gradient:blue-white'"
        )
    for colour in colours:
        if colour not in COLOURS:
            raise ValueError(
                f"background {name!r}: unknown colour {colour!r}; use one of {sorted(COLOURS)}"
            )
    if kind in ("stripes", "checker", "dots") and colours[0] == "white":
        raise ValueError(
            f"background {name!r}: a white pattern on the white ground is invisible; "
            f"use one of {list(PATTERN_COLOURS)}"
        )
    return kind, colours


def background_colours(name: str) -> frozenset[str]:
    """Colour names that dominate a background (products of these colours would vanish)."""
    kind, colours = parse_background(name)
    return frozenset(("white",) if kind == "studio" else colours)


@lru_cache(maxsize=1024)
def render_background(name: str, size: int) -> np.ndarray:
    """size x size x 3 float32 image of a background, values 0..255; read-only (cached)."""
    kind, colours = parse_background(name)
    xs = (np.arange(size, dtype=np.float32) + 0.5) / size
    x, y = xs[None, :], xs[:, None]
    rgb = [np.asarray(COLOURS[c], dtype=np.float32) for c in colours]
    ground = np.asarray(PATTERN_GROUND, dtype=np.float32)
    if kind == "solid":
        image = np.broadcast_to(rgb[0], (size, size, 3))
    elif kind == "gradient":  # vertical: first colour at the top, second at the bottom
        t = y[..., None]
        image = np.broadcast_to(rgb[0] * (1.0 - t) + rgb[1] * t, (size, size, 3))
    elif kind == "stripes":  # vertical stripes
        on = np.floor(x * PATTERN_CELLS).astype(int) % 2 == 0
        image = np.broadcast_to(np.where(on[..., None], rgb[0], ground), (size, size, 3))
    elif kind == "checker":
        cells = np.floor(x * PATTERN_CELLS).astype(int) + np.floor(y * PATTERN_CELLS).astype(int)
        image = np.where((cells % 2 == 0)[..., None], rgb[0], ground)
    elif kind == "dots":
        fx = x * PATTERN_CELLS % 1.0 - 0.5
        fy = y * PATTERN_CELLS % 1.0 - 0.5
        image = np.where((fx * fx + fy * fy < 0.3**2)[..., None], rgb[0], ground)
    else:  # studio: near-white sweep with a faint vignette
        r2 = ((x - 0.5) ** 2 + (y - 0.45) ** 2) / 0.5
        image = np.asarray((248, 248, 246), dtype=np.float32) * (1.0 - 0.1 * r2)[..., None]
    out = np.ascontiguousarray(image, dtype=np.float32)
    out.setflags(write=False)
    return out


def all_backgrounds() -> list[str]:
    """Every valid background name, in a fixed order."""
    names = [f"solid:{c}" for c in COLOURS]
    names += [f"gradient:{a}-{b}" for a in COLOURS for b in COLOURS if a != b]
    names += [f"{k}:{c}" for k in ("stripes", "checker", "dots") for c in PATTERN_COLOURS]
    return names + [STUDIO_WHITE]
