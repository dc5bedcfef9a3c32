"""Instruction phrasings for every edit, and the closed word vocabulary they use.

Instructions are lower-case words separated by single spaces, with no punctuation, so a
tokenizer can split on whitespace. Every phrasing of an edit names its target exactly
(colour names, background kind), so each instruction has one correct result.
"""

from __future__ import annotations

from functools import lru_cache

from .palette import COLOURS, parse_background
from .products import PRODUCTS

# Placeholders: {c} colour, {c1} {c2} gradient colours (top, bottom), {p} product kind.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "solid": (
        "replace the background with solid {c}",
        "put the {p} on a {c} background",
        "change the backdrop to {c}",
        "make the background plain {c}",
        "use a solid {c} background",
    ),
    "gradient": (
        "place the product on a {c1} to {c2} gradient",
        "replace the background with a {c1} to {c2} gradient",
        "use a {c1} to {c2} gradient background",
        "change the backdrop to a gradient from {c1} to {c2}",
    ),
    "stripes": (
        "use a {c} striped background",
        "put the {p} on {c} stripes",
        "replace the background with {c} stripes",
    ),
    "checker": (
        "use a {c} checkered background",
        "put the {p} on a {c} checkerboard",
        "replace the background with a {c} checker pattern",
    ),
    "dots": (
        "use a {c} polka dot background",
        "put the {p} on {c} dots",
        "replace the background with {c} polka dots",
    ),
    "studio": (
        "make the background studio white",
        "put the {p} in a white studio",
        "replace the background with a clean studio backdrop",
    ),
    "recolour": (
        "make the {p} {c}",
        "recolour the product to {c}",
        "change the colour of the {p} to {c}",
        "paint the {p} {c}",
        "turn the product {c}",
    ),
    "add-shadow": (
        "add a soft shadow under the product",
        "add a shadow beneath the {p}",
        "give the {p} a soft drop shadow",
        "add a contact shadow",
    ),
    "remove-shadow": (
        "remove the shadow",
        "remove the shadow under the {p}",
        "take away the drop shadow",
        "delete the shadow beneath the product",
    ),
}


def phrase(template_key: str, choice: int, product: str, colours: tuple[str, ...] = ()) -> str:
    """Fill phrasing number `choice` (taken modulo the count) of one template group."""
    templates = TEMPLATES[template_key]
    fields = {"p": product}
    if len(colours) == 1:
        fields["c"] = colours[0]
    elif len(colours) == 2:
        fields["c1"], fields["c2"] = colours
    return templates[choice % len(templates)].format(**fields)


def background_instruction(background: str, product: str, choice: int) -> str:
    """An instruction that turns any background into `background`."""
    kind, colours = parse_background(background)
    return phrase(kind, choice, product, colours)


def instruction_words(instruction: str) -> list[str]:
    """The words of an instruction, as the vocabulary counts them."""
    return instruction.split()


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[str, ...]:
    words: set[str] = set(COLOURS) | set(PRODUCTS)
    for templates in TEMPLATES.values():
        for template in templates:
            words.update(w for w in template.split() if not w.startswith("{"))
    return tuple(sorted(words))


def instruction_vocabulary() -> list[str]:
    """Every word that can appear in a generated instruction, sorted (for a tiny tokenizer)."""
    return list(_vocabulary())
