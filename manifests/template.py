"""Instruction templates: str.format-style ``{field}`` placeholders, filled without evaluation.

Only plain named fields are allowed. Attribute or index access (``{product.__class__}``,
``{fields[0]}``), positional fields and nested fields inside format specs are refused, and
filling looks values up in a plain dict, so a template can never reach into Python objects.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

_CONVERSIONS = {None: lambda v: v, "s": str, "r": repr, "a": ascii}


class TemplateError(ValueError):
    """A template that cannot be used, or a value that cannot fill it."""


@dataclass(frozen=True)
class _Part:
    literal: str
    field: str | None
    spec: str
    conversion: str | None


@dataclass(frozen=True)
class Template:
    text: str
    parts: tuple[_Part, ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """Field names in order of first use."""
        return tuple(dict.fromkeys(p.field for p in self.parts if p.field is not None))

    def fill(self, values: Mapping[str, object]) -> str:
        """Fill every field from ``values``. Raises TemplateError for a missing value."""
        out: list[str] = []
        for part in self.parts:
            out.append(part.literal)
            if part.field is None:
                continue
            if part.field not in values:
                raise TemplateError(f"no value for field {{{part.field}}}")
            value = _CONVERSIONS[part.conversion](values[part.field])
            try:
                out.append(format(value, part.spec))
            except (ValueError, TypeError) as err:
                raise TemplateError(
                    f"cannot format {value!r} with {{{part.field}:{part.spec}}}: {err}"
                ) from None
        return "".join(out)


def parse_template(text: str) -> Template:
    """Parse and check a template. Raises TemplateError saying what is wrong and how to fix it."""
    if not isinstance(text, str):
        raise TemplateError(f"the template must be text (got {text!r})")
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        raise TemplateError(
            f"malformed template ({err}); write literal braces as {{{{ and }}}}"
        ) from None
    parts: list[_Part] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append(_Part(literal, None, "", None))
            continue
        if field == "" or field.isdigit():
            raise TemplateError(
                f"positional field {{{field}}} is not allowed; name the field, e.g. {{product}}"
            )
        if "." in field or "[" in field:
            raise TemplateError(
                f"field {{{field}}} uses attribute or index access, which templates do not "
                "allow; use a plain field name such as {product}"
            )
        if not field.isidentifier():
            raise TemplateError(
                f"field {{{field}}} is not a plain name; use letters, digits and underscores"
            )
        spec = spec or ""
        if "{" in spec or "}" in spec:
            raise TemplateError(f"field {{{field}}} has a nested field in its format spec")
        if conversion not in _CONVERSIONS:
            raise TemplateError(f"field {{{field}}} has an unknown conversion !{conversion}")
        parts.append(_Part(literal, field, spec, conversion))
    return Template(text, tuple(parts))
