"""First-block step caching (a fast-path approximation, opt-in and part of the cache key).

Between neighbouring sampling steps the transformer's output changes little. Each step runs the
first double block; for each row whose image-token residual changed by less than ``threshold``
(relative mean absolute change since that row's last fully computed step) the remaining blocks'
cached residual is reused. Decisions and state are per row, so a row's pixels never depend on what
it is batched with; the remaining blocks are skipped outright when every row of the batch reuses.
``threshold=0`` computes every step (exact).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class FirstBlockCache:
    threshold: float
    max_consecutive_skips: int = 2  # bound the drift: recompute at least every few steps
    computed: int = 0  # row-steps computed in full
    skipped: int = 0  # row-steps that reused the cached residual
    _first: torch.Tensor | None = field(default=None, repr=False)  # [B, N, C] reference residual
    _rest: torch.Tensor | None = field(default=None, repr=False)  # [B, N, C] cached residual
    _consecutive: torch.Tensor | None = field(default=None, repr=False)  # [B] skips in a row

    def reuse_mask(self, first_residual: torch.Tensor) -> torch.Tensor:
        """[B] bool: rows that may reuse the cached residual this step."""
        b = first_residual.shape[0]
        if self._first is None or self.threshold <= 0:
            return torch.zeros(b, dtype=torch.bool, device=first_residual.device)
        dims = tuple(range(1, first_residual.ndim))
        change = (first_residual - self._first).abs().mean(dims) / self._first.abs().mean(dims).clamp_min(1e-12)
        return (change < self.threshold) & (self._consecutive < self.max_consecutive_skips)

    def combine(self, reuse: torch.Tensor, first_residual: torch.Tensor, first_out: torch.Tensor,
                computed_out: torch.Tensor | None) -> torch.Tensor:
        """Image tokens after all blocks: cached for reusing rows, computed for the others."""
        n_reuse = int(reuse.sum())
        self.skipped += n_reuse
        self.computed += reuse.numel() - n_reuse
        if computed_out is None:  # every row reuses
            self._consecutive += 1
            return first_out + self._rest
        if self._first is None:
            self._first = first_residual.clone()
            self._rest = computed_out - first_out
            self._consecutive = torch.zeros(reuse.shape, dtype=torch.long, device=reuse.device)
            return computed_out
        keep = reuse[:, None, None]
        out = torch.where(keep, first_out + self._rest, computed_out)
        self._first = torch.where(keep, self._first, first_residual)
        self._rest = torch.where(keep, self._rest, computed_out - first_out)
        self._consecutive = torch.where(reuse, self._consecutive + 1, torch.zeros_like(self._consecutive))
        return out
