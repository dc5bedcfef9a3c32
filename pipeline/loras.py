"""LoRA adapters of a run and of its rows: named, read, hashed and checked on the driver.

A run names adapters with ``--lora PATH[:SCALE]`` (repeatable; job ``sampler.loras``), a row with
its manifest ``lora`` column; a row's column, when not null, replaces the run's set for that row
(an empty list or string: the base model). Every adapter file is read once per run: its sha256
and scale enter the key (``kontext_core.lora.lora_key``), its shapes are checked against the
model's transformer config with no weights built. A problem with the run's adapters is a
ConfigError (exit 2, before any work); with a row's, that row alone fails (bad-row).

Actors get each set as ``RowLoras.to_wire()`` (paths, hashes, scales, mode) and load the files
themselves once (``AdapterCache``), refusing one whose bytes changed since planning.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError

DEFAULT_MODE = "unfused"
LORA_MODES = ("unfused", "fused")


@dataclass(frozen=True)
class AdapterRef:
    """One adapter as a row uses it: the file the actor reads, its sha256, the user's scale."""

    path: str
    sha256: str
    scale: float


@dataclass(frozen=True)
class RowLoras:
    """An adapter set in canonical order (sha256, scale) with the run's mode; equal sets are one
    object per run, so 200k rows sharing a set hold one reference each."""

    adapters: tuple[AdapterRef, ...]
    mode: str
    key: Mapping[str, Any] = field(compare=False, hash=False)  # the cache key's ``lora`` entry
    token: str = field(default="", compare=False)  # sortable name (plan order: a set's rows together)

    def to_wire(self) -> dict[str, Any]:
        return {"mode": self.mode, "adapters": [
            {"path": a.path, "sha256": a.sha256, "scale": a.scale} for a in self.adapters]}


class LoraResolver:
    """Resolves ``path[:scale]`` specs into RowLoras for a run: files read and checked once."""

    def __init__(self, transformer_config: Any, mode: str = DEFAULT_MODE,
                 manifest_dir: str | os.PathLike | None = None) -> None:
        if mode not in LORA_MODES:
            raise ConfigError(f"--lora-mode {mode!r} is not one of {', '.join(LORA_MODES)}; "
                              "use unfused (any weights) or fused (plain float weights only)")
        self.config = transformer_config
        self.mode = mode
        self.manifest_dir = Path(manifest_dir) if manifest_dir is not None else Path.cwd()
        self.run: RowLoras | None = None
        self._files: dict[str, tuple[tuple | None, str | Exception]] = {}  # path -> (stat, sha256 | error)
        self._sets: dict[tuple, RowLoras] = {}

    def set_run(self, specs: Sequence[str] | None, flag: str = "--lora") -> RowLoras | None:
        """The run's own adapters (relative paths: the working directory); ConfigError naming
        ``flag`` for any problem."""
        from kontext_core.lora import LoraError

        try:
            self.run = self.resolve(specs or (), Path.cwd())
        except LoraError as exc:
            raise ConfigError(f"{flag}: {exc}") from None
        return self.run

    def for_row(self, specs: Sequence[str] | None) -> RowLoras | None:
        """A row's set: its ``lora`` column (paths relative to the manifest's folder), else the
        run's. Raises LoraError (a ValueError: the row fails alone with its reason)."""
        if specs is None:
            return self.run
        return self.resolve(specs, self.manifest_dir)

    def resolve(self, specs: Sequence[str], base: Path) -> RowLoras | None:
        """Specs -> the interned RowLoras (None for no adapters); LoraError for a bad one."""
        from kontext_core.lora import LoraError, parse_lora_spec

        refs = []
        for text in specs:
            spec = parse_lora_spec(text)
            if not spec.path:
                raise LoraError(text, "names no file", "write the adapter as path[:scale]", "missing")
            path = _absolute(spec.path, base)
            refs.append(AdapterRef(path, self._sha256(path), spec.scale))
        if not refs:
            return None
        ordered = tuple(sorted(refs, key=lambda r: (r.sha256, r.scale)))
        ident = (tuple((r.sha256, r.scale) for r in ordered), self.mode)
        found = self._sets.get(ident)
        if found is None:
            key = {"version": _lora_version(), "mode": self.mode,
                   "adapters": [{"sha256": r.sha256, "scale": r.scale} for r in ordered]}
            found = self._sets[ident] = RowLoras(ordered, self.mode, key, json.dumps(key, sort_keys=True))
        return found

    def _sha256(self, path: str) -> str:
        """Read, convert and shape-check the file once per run (again if it changed on disk)."""
        stamp = _stamp(path)
        known = self._files.get(path)
        if known is not None and known[0] == stamp:
            if isinstance(known[1], Exception):
                raise known[1]
            return known[1]
        from kontext_core.lora import LoraError, check_loras, load_lora

        try:
            adapter = load_lora(path)
            check_loras([(adapter, 1.0)], self.config)
        except LoraError as exc:
            self._files[path] = (stamp, exc)
            raise
        self._files[path] = (stamp, adapter.fingerprint)
        return adapter.fingerprint  # the tensors are dropped: actors read the file themselves


def _absolute(path: str, base: Path) -> str:
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _stamp(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _lora_version() -> int:
    from kontext_core.lora import LORA_VERSION

    return LORA_VERSION


def make_resolver(model_spec: str, mode: str, manifest: str | None, run_specs: Sequence[str] | None,
                  fp8: bool, storage: str, flag: str = "--lora") -> LoraResolver:
    """The run's resolver with its own adapters resolved; ConfigError (exit 2) for a bad one or
    for fused mode on weights it cannot be fused into (fp8, GGUF)."""
    from kontext_core import resolve_model

    source = resolve_model(model_spec)
    manifest_dir = Path(manifest).resolve().parent if manifest and "://" not in manifest else None
    resolver = LoraResolver(source.preset.transformer, mode, manifest_dir)
    if mode == "fused":
        gguf = any(Path(f).suffix == ".gguf" for f in source.files)
        if fp8 or storage != "native" or gguf:
            what = "GGUF" if gguf else "fp8"
            raise ConfigError(f"--lora-mode fused cannot write adapters into {what} weights (fused mode "
                              "needs plain float weights); use --lora-mode unfused (the default)")
    resolver.set_run(run_specs, flag)
    return resolver


class AdapterCache:
    """An actor's adapters, loaded once per file hash (the most recent ``limit`` kept)."""

    def __init__(self, limit: int = 16) -> None:
        self.limit = limit
        self._by_sha: OrderedDict[str, Any] = OrderedDict()
        self.loads = 0
        self.used = False  # a batch named adapters: later batches without any must clear them

    def adapters(self, wire: Mapping[str, Any] | None) -> tuple[list[tuple[Any, float]], str]:
        """[(LoraAdapter, scale), ...] and the mode of a batch's ``loras`` entry ([] and the
        default mode when it has none). LoraError when a file is gone or changed since planning."""
        if not wire:
            return [], DEFAULT_MODE
        self.used = True
        return [(self._get(a["path"], a["sha256"]), float(a["scale"])) for a in wire["adapters"]], \
            str(wire.get("mode") or DEFAULT_MODE)

    def _get(self, path: str, sha256: str) -> Any:
        adapter = self._by_sha.get(sha256)
        if adapter is not None:
            self._by_sha.move_to_end(sha256)
            return adapter
        from kontext_core.lora import LoraError, load_lora

        adapter = load_lora(path)
        self.loads += 1
        if adapter.fingerprint != sha256:
            raise LoraError(path, "changed after planning (its sha256 differs from the planned one)",
                            "run again to use the new file", "mismatch")
        self._by_sha[sha256] = adapter
        while len(self._by_sha) > self.limit:
            self._by_sha.popitem(last=False)
        return adapter
