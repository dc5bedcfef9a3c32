"""Chains of edits in the review (rows whose image is ``row:<row_id>``, pipeline.chains).

A chained row's source is its parent's output, so the review compares it with that image
(``Chains.source_of``), the contact sheets show each chain as one strip (source -> step 1 ->
step 2 ...: ``strips``) and each tile names its place in the chain (``Chains.trail``). The
graph comes from results.parquet, so a parent that is a cache hit (not shown again) still
gives its children their source.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import pyarrow.parquet as pq

from pipeline.chains import parent_row_id

from .sheets import Cell, SheetLayout, write_strips

T = TypeVar("T")


@dataclass
class Chains:
    """Row id -> parent row id, and the outputs of the rows that are parents."""

    parent: dict[str, str] = field(default_factory=dict)
    output: dict[str, str | None] = field(default_factory=dict)
    _children: dict[str, list[str]] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_results(cls, run_dir: str | Path) -> Chains:
        """The run's chains (empty for a run without ``row:`` images or results)."""
        path = Path(run_dir) / "results.parquet"
        try:
            names = pq.read_schema(path).names
            if not {"row_id", "image", "output_uri"} <= set(names):
                return cls()
            table = pq.read_table(path, columns=["row_id", "image", "output_uri"]).to_pydict()
        except (OSError, ValueError):
            return cls()
        chains = cls()
        for row_id, image in zip(table["row_id"], table["image"], strict=True):
            parent = parent_row_id(image)
            if parent is not None and row_id is not None:
                chains.parent[row_id] = parent
        parents = set(chains.parent.values())
        for row_id, uri in zip(table["row_id"], table["output_uri"], strict=True):
            if row_id in parents:
                chains.output[row_id] = uri
        return chains

    def __bool__(self) -> bool:
        return bool(self.parent)

    def source_of(self, image: str | None) -> str | None:
        """The output a ``row:<row_id>`` source names (None: not a chained source, or its
        parent has no output)."""
        parent = parent_row_id(image)
        return None if parent is None else self.output.get(parent)

    def lineage(self, row_id: str) -> list[str]:
        """The row's ancestors, root first, then the row."""
        trail, seen = [row_id], {row_id}
        while (up := self.parent.get(trail[-1])) is not None and up not in seen:
            trail.append(up)
            seen.add(up)
        return trail[::-1]

    def trail(self, row_id: str) -> str | None:
        """'step 2 of 3: a -> [b] -> c' for a row in a chain (its first descendants line),
        else None."""
        line = self.lineage(row_id)
        if self._children is None:
            self._children = {}
            for child, up in sorted(self.parent.items()):
                self._children.setdefault(up, []).append(child)
        while self._children.get(line[-1]) and len(line) <= len(self.parent):
            line.append(self._children[line[-1]][0])
        if len(line) < 2:
            return None
        step = line.index(row_id) + 1
        shown = " -> ".join(f"[{r}]" if r == row_id else r for r in line)
        return f"step {step} of {len(line)}: {shown}"


def strips(members: Sequence[T], row_id_of, chains: Chains) -> list[list[T]]:
    """``members`` (one group's rows, manifest order) as strips: each chain's rows in step
    order (a branching chain depth first), after the plain rows, which form one strip."""
    parents = set(chains.parent.values())
    in_chain = [row_id_of(m) in chains.parent or row_id_of(m) in parents for m in members]
    plain = [m for m, chained in zip(members, in_chain, strict=True) if not chained]
    roots: dict[str, list[T]] = {}
    for m, chained in zip(members, in_chain, strict=True):
        if chained:
            roots.setdefault(chains.lineage(row_id_of(m))[0], []).append(m)
    out = [plain] if plain else []
    for chained in roots.values():
        out.append(sorted(chained, key=lambda m: chains.lineage(row_id_of(m))))
    return out


def strip_sheets(title: str, members: Sequence[T], cells: Sequence[Cell], row_id_of, image_of,
                 source_cell: Callable[[str | None], Cell], chains: Chains, layout: SheetLayout,
                 out_dir: Path, stem: str) -> tuple[list[Path], list[int]]:
    """One group's contact sheets as strips: the plain rows after their source, then each
    chain after the source of its first step shown. (page paths, each member's page index)."""
    index = {id(m): i for i, m in enumerate(members)}
    groups = strips(members, row_id_of, chains)
    rows: list[list[Cell]] = []
    for group in groups:
        steps = [cells[index[id(m)]] for m in group]
        chained = any(row_id_of(m) in chains.parent or row_id_of(m) in chains.output
                      for m in group)
        if chained:
            steps = [replace(c, follows=True) for c in steps]
        rows.append([source_cell(image_of(group[0])), *steps])
    paths, page_of = write_strips(title, rows, layout, out_dir, stem)
    pages = [0] * len(members)
    for group, where in zip(groups, page_of, strict=True):
        for m, page in zip(group, where, strict=True):
            pages[index[id(m)]] = page
    return paths, pages
