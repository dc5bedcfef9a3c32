"""`kontext-batch run` through the forked drivers (hardening_helpers.ForkedDrivers): the same
CLI, its own process joining the cluster, without an interpreter start-up and imports per run."""

from __future__ import annotations

import itertools
import subprocess
from pathlib import Path
from typing import Any

from hardening_helpers import cli_argv, cli_env

_LOGS = itertools.count()


def forked_cli(drivers: Any, manifest: Path, out: Path, address: str, *more: str,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Like hardening_helpers.run_cli: returncode (-9 when the run SIGKILLed itself) and the
    driver's output (stdout and stderr together, in both fields)."""
    log = out.parent / f"driver-{next(_LOGS)}.log"
    argv = cli_argv(manifest, out, address, *more)
    code = drivers.run(argv, env or cli_env(), log)
    text = log.read_text() if log.exists() else ""
    return subprocess.CompletedProcess(["kontext-batch", *argv], code, text, text)
