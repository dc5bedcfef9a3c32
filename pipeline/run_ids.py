"""What a run id may be: a run's folder is OUT/runs/<run_id>, so an id must name one folder
there, never a path (``../..`` would escape OUT; an absolute path would replace OUT/runs)."""

from __future__ import annotations

import re

from pipeline.errors import ConfigError

MAX_LENGTH = 128
_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RULE = (f"use letters, digits, '.', '_' and '-' (starting with a letter or digit, at most "
        f"{MAX_LENGTH} characters), with no path separators")


def run_id_problem(run_id: str) -> str | None:
    """Why ``run_id`` cannot be a run id, or None when it can."""
    if not run_id:
        return "it is empty"
    if len(run_id) > MAX_LENGTH:
        return f"it has {len(run_id)} characters"
    if "/" in run_id or "\\" in run_id:
        return "it contains a path separator"
    if run_id in (".", ".."):  # the only names that are not a new folder (no separators here)
        return "it names the runs folder or its parent"
    if not _PATTERN.fullmatch(run_id):
        bad = sorted({c for c in run_id if not (c.isascii() and (c.isalnum() or c in "._-"))})
        if bad:
            return "it contains " + ", ".join(repr(c) for c in bad)
        return "it does not start with a letter or digit"
    return None


def check_run_id(run_id: str, what: str = "--run-id") -> str:
    """``run_id`` unchanged, or ConfigError naming the value, the reason and the rule."""
    problem = run_id_problem(run_id)
    if problem is not None:
        raise ConfigError(f"{what} {run_id!r} is not usable as a run id: {problem}; {RULE}")
    return run_id
