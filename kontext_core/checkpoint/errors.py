"""Errors raised while finding and reading weights (re-exported by ``kontext_core.loading``)."""

from __future__ import annotations


class ModelNotFoundError(FileNotFoundError):
    """A model spec that names nothing on disk; the message says where files must go."""


class CheckpointError(ValueError):
    """A checkpoint that is wrong or incomplete; names the file, the key and the shapes."""
