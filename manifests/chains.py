"""Chained rows: a row whose image is ``row:<row_id>`` edits that row's output.

The rows form a forest (each chained row has exactly one parent). Two things make the whole
manifest unusable, so they are whole-file problems (the run stops before any work, exit 2):
a parent id that no row of the manifest has, and a cycle (rows that are, through their
parents, their own ancestors). Both name the rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .problems import Problem


@dataclass(frozen=True)
class ChainLink:
    """One chained row: its index and id, and the row id its image names."""

    row: int
    row_id: str
    parent_id: str


@dataclass
class ChainGraph:
    """The manifest's chains: child row index -> parent row index, and what is wrong."""

    parent: dict[int, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def depth(self) -> dict[int, int]:
        """Row index -> how many ancestors it has (1 for a row on a plain source's output)."""
        depths: dict[int, int] = {}
        for row in self.parent:
            trail = []
            while row in self.parent and row not in depths:
                trail.append(row)
                row = self.parent[row]
            base = depths.get(row, 0)
            for n, r in enumerate(reversed(trail), start=1):
                depths[r] = base + n
        return depths


def _name(row: int, row_id: str) -> str:
    return f"row {row} ({row_id!r})"


def build_graph(links: Sequence[ChainLink], index_of: Mapping[str, int]) -> ChainGraph:
    """The graph of ``links``; ``index_of`` maps every row id of the manifest to its index."""
    graph = ChainGraph()
    for link in links:
        parent = index_of.get(link.parent_id)
        if parent is None:
            graph.problems.append(Problem(None, "image", (
                f"{_name(link.row, link.row_id)} takes the output of row "
                f"{link.parent_id!r} (image 'row:{link.parent_id}'), but no row has that "
                "row_id; fix the id or add the parent row")))
        else:
            graph.parent[link.row] = parent
    graph.problems += _cycle_problems(graph, {link.row: link.row_id for link in links})
    if graph.problems:
        graph.parent.clear()  # a refused manifest has no usable order
    return graph


def _cycle_problems(graph: ChainGraph, ids: Mapping[int, str]) -> list[Problem]:
    """One problem per cycle, naming its rows in parent order."""
    state: dict[int, int] = {}  # 1: on the current walk, 2: finished
    problems = []
    for start in graph.parent:
        walk: list[int] = []
        row = start
        while row in graph.parent and state.get(row) is None:
            state[row] = 1
            walk.append(row)
            row = graph.parent[row]
        if state.get(row) == 1:  # the walk came back to itself: rows from `row` on loop
            loop = walk[walk.index(row):]
            names = " -> ".join(_name(r, ids[r]) for r in loop)
            why = ("it takes its own output" if len(loop) == 1 else
                   "each row takes the output of the next")
            problems.append(Problem(None, "image", (
                f"chain cycle: {names} -> back to {_name(row, ids[row])}; {why}, so none "
                "can start; make one of them edit a source image instead")))
        for r in walk:
            state[r] = 2
    return problems
