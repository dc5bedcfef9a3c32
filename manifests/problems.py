"""Problems found in a manifest (or while building one), and the errors that carry them."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

# ManifestError's message lists at most this many problems, then says how many more there are.
MAX_LISTED_PROBLEMS = 50


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: where it is and what to do about it."""

    row: int | None  # 0-based row index, None for whole-file problems
    column: str | None
    reason: str  # says what is wrong and how to fix it

    def __str__(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column {self.column!r}")
        return f"{', '.join(where)}: {self.reason}" if where else self.reason


def format_problems(problems: list[Problem], header: str) -> str:
    """A header line, then one problem per line, truncated after MAX_LISTED_PROBLEMS."""
    lines = [header]
    lines += [f"  - {p}" for p in problems[:MAX_LISTED_PROBLEMS]]
    hidden = len(problems) - MAX_LISTED_PROBLEMS
    if hidden > 0:
        lines.append(f"  ... and {hidden} more problem{'s' if hidden != 1 else ''} not listed")
    return "\n".join(lines)


def _plural(n: int) -> str:
    return f"{n} problem{'s' if n != 1 else ''}"


class ManifestError(Exception):
    """A manifest cannot be used. `.problems` lists everything found; str() shows them all."""

    def __init__(
        self, problems: Iterable[Problem] | str, source: str | os.PathLike | None = None
    ) -> None:
        if isinstance(problems, str):
            problems = [Problem(None, None, problems)]
        self.problems: list[Problem] = list(problems)
        self.source = os.fspath(source) if source is not None else None
        super().__init__(format_problems(self.problems, self._header()))

    def _header(self) -> str:
        where = f"manifest {self.source!r}" if self.source else "manifest"
        return f"{where} has {_plural(len(self.problems))}:"


class BuildError(ManifestError):
    """A manifest cannot be built from a catalog and a variants file (same style as ManifestError)."""

    def _header(self) -> str:
        target = f" {self.source!r}" if self.source else ""
        return f"cannot build the manifest{target} ({_plural(len(self.problems))}):"
