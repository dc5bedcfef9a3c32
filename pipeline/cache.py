"""Cache keys: which inputs decide an output's pixels and bytes.

A row's key is the SHA-256 (hex) of a canonical JSON document (sorted keys, no spaces, UTF-8)
holding exactly the inputs that change the output file (``key_document``): source digest,
normalised instruction, seed, weights, sampler settings, precision, approximations, output
encoding, numerics and decode versions, the memory plan's weight storage when it is not
native, and the LoRA adapters (file hashes, scales, mode) when a row has any. Nothing else
is in it (row ids, run id, batch size, placement, offloading), so those never cause a
recompute. Each field, and what is left out and why: docs/architecture.md,
section 5 "Cache key".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.image_io import DECODE_VERSION

KEY_SCHEMA = "kontext-batch-key/1"
PRESET_DEFAULT = "preset-default"
DEFAULT_APPROXIMATIONS: Mapping[str, Any] = {"fp8": False, "step_cache": None}
NATIVE_STORAGE = "native"  # weights in the compute dtype: left out of the key (old keys hold)


def numerics_version() -> str:
    """kontext_core's NUMERICS_VERSION: bumped there whenever sampling changes the pixels."""
    from kontext_core import NUMERICS_VERSION  # lazily: torch loads with it

    return str(NUMERICS_VERSION)


def normalise_instruction(text: str) -> str:
    """Strip and collapse whitespace runs to one space; case is kept (it can matter)."""
    return " ".join(text.split())


def canonical_json(doc: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no whitespace, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class ModelSettings:
    """Run-wide inputs of every key: the same for all rows of one run."""

    model_fingerprint: str
    dtype: str
    numerics: str = field(default_factory=numerics_version)
    decode: str = DECODE_VERSION
    approximations: Mapping[str, Any] = field(
        default_factory=lambda: dict(DEFAULT_APPROXIMATIONS))
    # the memory plan's weight storage (kontext_core.quant.plans.MemoryPlan.key_settings)
    storage: str = NATIVE_STORAGE


@dataclass(frozen=True)
class RowSettings:
    """Per-row inputs of a key besides the source digest, instruction and seed."""

    steps: int | None
    guidance: float | None
    size: tuple[int, int] | None
    output: Mapping[str, Any]  # {"format": ..., "encoder": {...}}
    # LoRA adapters (kontext_core.lora.lora_key: file hashes, scales, mode); None: the base model
    lora: Mapping[str, Any] | None = None


def key_document(image_sha256: str, instruction: str, seed: int, model: ModelSettings,
                 row: RowSettings) -> dict[str, Any]:
    """The document whose canonical JSON is hashed into the key."""
    doc = {
        "schema": KEY_SCHEMA,
        "image": image_sha256,
        "instruction": normalise_instruction(instruction),
        "seed": int(seed),
        "model": model.model_fingerprint,
        "steps": PRESET_DEFAULT if row.steps is None else int(row.steps),
        "guidance": PRESET_DEFAULT if row.guidance is None else float(row.guidance),
        "size": PRESET_DEFAULT if row.size is None else [int(row.size[0]), int(row.size[1])],
        "dtype": model.dtype,
        "approximations": dict(model.approximations),
        "output": {"format": row.output["format"], "encoder": dict(row.output["encoder"])},
        "numerics": model.numerics,
        "decode": model.decode,
    }
    if model.storage != NATIVE_STORAGE:  # only then, so runs of the default plan keep their keys
        doc["storage"] = model.storage
    if row.lora is not None:  # only then, so rows without adapters keep their keys
        doc["lora"] = dict(row.lora)
    return doc


def cache_key(image_sha256: str, instruction: str, seed: int, model: ModelSettings,
              row: RowSettings) -> str:
    """SHA-256 hex of the canonical key document (see the module docstring)."""
    doc = key_document(image_sha256, instruction, seed, model, row)
    return hashlib.sha256(canonical_json(doc)).hexdigest()
