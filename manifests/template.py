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
    """Parse and check a template. Raises TemplateError saying what is wrong and how to fix it
    (the first problem; ``template_problems`` lists them all)."""
    template, problems = check_template(text)
    if problems:
        raise TemplateError(problems[0])
    return template


def template_problems(text: str) -> list[str]:
    """Every reason the template cannot be used (empty when it is fine), in field order."""
    return check_template(text)[1]


def check_template(text: object) -> tuple[Template | None, list[str]]:
    """(template, []) when usable, else (None, every problem): a user fixing a variants file
    sees all of a template's bad fields at once, not one per try."""
    if not isinstance(text, str):
        return None, [f"the template must be text (got {text!r})"]
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as err:
        return None, [f"malformed template ({err}); write literal braces as {{{{ and }}}}"]
    parts: list[_Part] = []
    problems: list[str] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append(_Part(literal, None, "", None))
            continue
        reason = _field_problem(field, spec or "", conversion)
        if reason:
            problems.append(reason)
        else:
            parts.append(_Part(literal, field, spec or "", conversion))
    if problems:
        return None, problems
    return Template(text, tuple(parts)), []


def _field_problem(field: str, spec: str, conversion: str | None) -> str | None:
    if field == "" or field.isdigit():
        return f"positional field {{{field}}} is not allowed; name the field, e.g. {{product}}"
    if "." in field or "[" in field:
        return (
            f"field {{{field}}} uses attribute or index access, which templates do not "
            "allow; use a plain field name such as {product}"
        )
    if not field.isidentifier():
        return f"field {{{field}}} is not a plain name; use letters, digits and underscores"
    if "{" in spec or "}" in spec:
        return f"field {{{field}}} has a nested field in its format spec"
    if conversion not in _CONVERSIONS:
        return f"field {{{field}}} has an unknown conversion !{conversion}"
    return None
