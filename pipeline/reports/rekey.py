"""Recompute an attempt's cache key from its source image and the run's settings (report --verify).

The key (pipeline.cache) hashes the source bytes, the instruction, the seed, the weights and the
sampler/encoding settings. The run-wide ones are in the ledger's run-start settings, the per-row
ones (steps, guidance, size, dtype) in the output's store sidecar, the format in its extension.
A key can be recomputed only where all of these are recorded and the source is still readable;
otherwise `Rekeyer.key_for` says why not, and the caller counts it instead of failing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.cache import (
    DEFAULT_APPROXIMATIONS,
    NATIVE_STORAGE,
    ModelSettings,
    RowSettings,
    cache_key,
)
from pipeline.digests import read_source_bytes
from pipeline.encode import EXTENSIONS, shared_output_spec
from pipeline.errors import PipelineError
from pipeline.image_io import DECODE_VERSION

FORMAT_OF_EXTENSION = {ext: fmt for fmt, ext in EXTENSIONS.items()}


class NotRecomputable(Exception):
    """The inputs of a key are not all recorded or readable; str() says which."""


def _is_uri(location: str) -> bool:
    return "://" in location


class Rekeyer:
    """Recomputes keys; source digests are cached per location (rows share sources)."""

    def __init__(self) -> None:
        self._digests: dict[str, str | NotRecomputable] = {}
        self._row_keys: dict[str, str] = {}  # row id -> key recorded (chained rows' parents)

    def _chained_source(self, record: Mapping[str, Any]) -> str | None:
        """A chained row's source digest: its parent's recorded key, marked (pipeline.chains);
        None for a row on a source image. Parents are recorded before their children."""
        from pipeline.chains import chain_source, parent_row_id

        if isinstance(record.get("row_id"), str) and isinstance(record.get("key"), str):
            self._row_keys[record["row_id"]] = record["key"]
        parent = parent_row_id(record.get("image"))
        if parent is None:
            return None
        if parent not in self._row_keys:
            raise NotRecomputable(f"chained row: the key of its parent row {parent!r} is not "
                                  "recorded before it")
        return chain_source(self._row_keys[parent])

    def source_location(self, image: Any, start: Mapping[str, Any]) -> str:
        """The source as the planner read it: absolute or a URI as recorded, else relative to
        the manifest's folder (the manifest contract)."""
        if not isinstance(image, str) or not image:
            raise NotRecomputable("the attempt records no source image")
        if _is_uri(image) or Path(image).is_absolute():
            return image
        manifest = start.get("manifest")
        if not isinstance(manifest, str) or _is_uri(manifest):
            raise NotRecomputable(f"source {image!r} is relative and the manifest's folder is not local")
        return str(Path(manifest).parent / image)

    def source_sha256(self, location: str) -> str:
        cached = self._digests.get(location)
        if cached is None:
            try:
                cached = hashlib.sha256(read_source_bytes(location)).hexdigest()
            except (OSError, PipelineError) as exc:
                cached = NotRecomputable(f"source {location} cannot be read ({exc})")
            self._digests[location] = cached
        if isinstance(cached, NotRecomputable):
            raise cached
        return cached

    def key_for(self, record: Mapping[str, Any], start: Mapping[str, Any],
                params: Mapping[str, Any], ext: str) -> tuple[str, str]:
        """(recomputed key, source location) of one attempt; NotRecomputable says why not."""
        settings = start.get("settings")
        if not isinstance(settings, Mapping) or "numerics" not in settings:
            raise NotRecomputable("the run-start record holds no numerics version (written by another tool "
                                  "or an older version)")
        fingerprint = start.get("fingerprint")
        sampler = params.get("sampler")
        if not isinstance(fingerprint, str) or not isinstance(sampler, Mapping) or "dtype" not in sampler:
            raise NotRecomputable("the model fingerprint or the sampler settings are not recorded")
        fmt = FORMAT_OF_EXTENSION.get(ext)
        if fmt is None:
            raise NotRecomputable(f"output extension {ext!r} names no known format")
        instruction, seed = record.get("instruction"), record.get("seed")
        if not isinstance(instruction, str) or not isinstance(seed, int) or isinstance(seed, bool):
            raise NotRecomputable("the attempt records no instruction or seed")
        chained = self._chained_source(record)
        location = record["image"] if chained else self.source_location(record.get("image"), start)
        model = ModelSettings(
            model_fingerprint=fingerprint, dtype=str(sampler["dtype"]), numerics=str(settings["numerics"]),
            decode=str(settings.get("decode", DECODE_VERSION)),
            approximations={**DEFAULT_APPROXIMATIONS, "step_cache": settings.get("step_cache") or None,
                            "fp8": bool(settings.get("fp8"))},
            storage=str((settings.get("memory_plan") or {}).get("storage", NATIVE_STORAGE)))
        size = sampler.get("size")
        row = RowSettings(steps=sampler.get("steps"), guidance=sampler.get("guidance"),
                          size=tuple(size) if isinstance(size, list | tuple) else None,
                          output=shared_output_spec(fmt), lora=sampler.get("lora"))
        source = chained or self.source_sha256(location)
        return cache_key(source, instruction, seed, model, row), location
