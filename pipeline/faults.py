"""Fault injection for tests of the runner's failure handling (never set in production).

The CLI reads a JSON list from the environment variable ``KONTEXT_BATCH_FAULTS`` and hands
it to every actor. Each fault fires on a batch that holds ``row_id``, at most ``times``
times over the whole run: a marker file per firing in ``marker_dir`` counts them, so a
restarted actor process does not fire again. Kinds:

- ``exit``:      ``os._exit(1)`` mid-batch (an actor dying: Ray restarts it).
- ``sticky``:    raise a CUDA "illegal memory access" error (poisoned device).
- ``oom``:       raise ``torch.cuda.OutOfMemoryError`` (transient, retried at a smaller batch).
- ``transient``: raise an ``OSError`` (transient, retried with backoff).
- ``sleep``:     sleep ``seconds`` before the batch (lets a test act mid-run).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ENV_VAR = "KONTEXT_BATCH_FAULTS"
KINDS = ("exit", "sticky", "oom", "transient", "sleep")


def faults_from_env() -> list[dict[str, Any]]:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return []
    faults = json.loads(text)
    if not isinstance(faults, list) or any(f.get("kind") not in KINDS for f in faults):
        raise ValueError(f"{ENV_VAR} must be a JSON list of faults with kind in {KINDS}")
    return faults


def _claim(fault: Mapping[str, Any], index: int) -> bool:
    """True (and records it) when the fault may fire once more."""
    times = int(fault.get("times", 1))
    marker_dir = Path(fault["marker_dir"])
    marker_dir.mkdir(parents=True, exist_ok=True)
    for n in range(times):
        try:
            fd = os.open(marker_dir / f"fault-{index}-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.close(fd)
        return True
    return False


def maybe_inject(faults: Sequence[Mapping[str, Any]], row_ids: Sequence[str]) -> None:
    """Fire the first matching fault for a batch holding ``row_ids``."""
    for index, fault in enumerate(faults):
        if fault.get("row_id") not in row_ids or not _claim(fault, index):
            continue
        kind = fault["kind"]
        if kind == "exit":
            os._exit(1)
        if kind == "sleep":
            time.sleep(float(fault.get("seconds", 1.0)))
            continue
        if kind == "sticky":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        if kind == "oom":
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB "
                                              "(injected)")
        raise OSError("injected transient I/O error")
