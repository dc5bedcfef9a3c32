"""Named kill points: the driver SIGKILLs itself at a chosen moment (crash-safety tests only).

``KONTEXT_TEST_KILL_AT=<point>:<n>`` makes the n-th time the driver passes ``<point>`` the
last thing it does: it sends itself SIGKILL there, exactly as if the machine had died at
that moment (no ``finally`` blocks, no flushes, no atexit). Unset, a kill point costs one
dictionary lookup. Points (in the order a run passes them): see ``POINTS``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV_VAR = "KONTEXT_TEST_KILL_AT"

POINTS = (
    "after-config",          # runner: config.json written, nothing in the ledger yet
    "after-run-start",       # runner: run-start record durable
    "after-plan",            # runner: keys computed, hits recorded
    "before-dispatch",       # runner: Ray joined, no actor started
    "after-actor-start",     # runner: actors created, no batch sent
    "after-submit",          # dispatch: a batch was sent to an actor
    "result-received",       # dispatch: a batch result arrived, nothing committed
    "after-sidecar",         # store: sidecar in place, output not yet
    "store-tmp-written",     # store: output bytes in a temp file, not renamed
    "after-store-commit",    # dispatch: output committed, its ledger line not written
    "ledger-mid-write",      # ledger: half of an append's bytes written (torn line)
    "after-ledger-append",   # dispatch: ok records of a batch durable
    "before-stop-actors",    # runner: every row settled, actors still up
    "results-tmp-written",   # outcomes: results table in a temp file, not renamed
    "after-results",         # runner: results.parquet in place, no run-end record
    "after-run-end",         # runner: run-end durable, reports not written
    "report-write",          # reports: report files written, review page not yet
)

_passed: Counter[str] = Counter()


def _target() -> tuple[str, int] | None:
    text = os.environ.get(ENV_VAR, "")
    if not text:
        return None
    point, _, count = text.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV_VAR}={text!r}: unknown point {point!r}; use one of "
                         f"{', '.join(POINTS)}")
    return point, int(count or 1)


def armed(point: str) -> bool:
    """Count a pass of ``point``; True when this pass is the one to die at. Callers that
    need to leave something half-done first (a torn write) do it, then call ``die()``."""
    target = _target()
    if target is None or target[0] != point:
        return False
    _passed[point] += 1
    return _passed[point] == target[1]


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_point(point: str) -> None:
    """SIGKILL this process when it is the chosen pass of ``point``."""
    if armed(point):
        die()
