"""The run's progress bar on stderr: rows finished / total, rows/s, ETA, hits, failures."""

from __future__ import annotations

import sys

from tqdm import tqdm


class RunProgress:
    """Counts rows as they reach a final state (done, cache-hit, failed)."""

    def __init__(self, total: int, desc: str = "rows", disable: bool | None = False,
                 counts: bool = True) -> None:
        """``counts``: show hits/failed/retries (the planning bar only counts rows planned)."""
        self._counts = counts
        self.hits = 0
        self.failed = 0
        self.done = 0
        self.retries = 0
        self._bar = tqdm(total=total, desc=desc, unit="row", file=sys.stderr,
                         mininterval=0.5, dynamic_ncols=True, disable=disable)
        self._refresh()

    def _refresh(self) -> None:
        if self._counts:
            self._bar.set_postfix(hits=self.hits, failed=self.failed, retries=self.retries,
                                  refresh=False)

    def start_at(self, *, hits: int = 0, failed: int = 0, done: int = 0) -> None:
        """Rows already final before this bar's rows run (planning's hits and failures, an
        earlier invocation's done rows): counted and shown as progress made."""
        self.hits += hits
        self.failed += failed
        self.done += done
        self._bar.update(hits + failed + done)
        self._refresh()

    def row_done(self, n: int = 1) -> None:
        self.done += n
        self._bar.update(n)
        self._refresh()

    def row_hit(self, n: int = 1) -> None:
        self.hits += n
        self._bar.update(n)
        self._refresh()

    def row_failed(self, n: int = 1) -> None:
        self.failed += n
        self._bar.update(n)
        self._refresh()

    def retry(self, n: int = 1) -> None:
        self.retries += n
        self._refresh()

    def close(self) -> None:
        self._bar.close()
