"""A compact set of 64-bit hashes, for finding duplicate row ids while streaming.

A Python set of ints costs ~90 bytes per entry; this keeps the hashes in a few sorted numpy
runs (8 bytes per entry). Runs merge like a binary counter, so there are O(log n) of them and
adding n hashes costs O(n log n) overall.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class SeenHashes:
    def __init__(self) -> None:
        self._runs: list[np.ndarray] = []  # each sorted and unique; sizes decrease along the list

    def __len__(self) -> int:
        return sum(len(run) for run in self._runs)

    def add(self, hashes: Sequence[int]) -> np.ndarray:
        """Add hashes in order. Returns a bool mask: True where the hash was already present
        (added before, or earlier in this same call)."""
        values = np.asarray(hashes, dtype=np.uint64)
        seen = np.zeros(len(values), dtype=bool)
        if not len(values):
            return seen
        for run in self._runs:
            at = np.searchsorted(run, values)
            found = at < len(run)
            found[found] = run[at[found]] == values[found]
            seen |= found
        _, first = np.unique(values, return_index=True)
        repeated = np.ones(len(values), dtype=bool)
        repeated[first] = False
        seen |= repeated
        self._push(np.unique(values[~seen]))
        return seen

    def _push(self, run: np.ndarray) -> None:
        if not len(run):
            return
        self._runs.append(run)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            newer, older = self._runs.pop(), self._runs.pop()
            merged = np.concatenate([older, newer])
            merged.sort(kind="stable")  # two sorted runs: timsort merges them in linear time
            self._runs.append(merged)
