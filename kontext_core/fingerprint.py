"""Model fingerprint: a cheap, stable identity of the weights for cache keys.

SHA-256 over the preset (shapes and settings; not its name or description) and every file of the model's layout (weights,
shard indexes, config.json files, tokenizers, scheduler config, kontext.json), sorted by their path
relative to the model folder. Per file: that path, its size, its safetensors header (every key,
dtype, shape, offset) and 16 evenly spaced 64 KiB samples of its bytes. Reading ~1 MiB per file
keeps it cheap for a 24 GB checkpoint, while any re-saved or fine-tuned file changes its header or
sampled bytes; small files (configs, tokenizers) are read whole. The folder's own location (or an HF
cache revision hash) is not part of it. Random presets hash their preset only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .loading import ModelSource, resolve_model

_SAMPLES = 16
_SAMPLE_BYTES = 64 * 1024
_COSMETIC = ("name", "description")  # renaming a model or its folder keeps its identity


def _file_digest(path: Path, name: str, h: hashlib._Hash) -> None:
    size = path.stat().st_size
    h.update(f"{name}:{size}".encode())
    with path.open("rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors" and len(head) == 8:
            header_len = int.from_bytes(head, "little")
            h.update(f.read(min(header_len, 100_000_000)))
        if size <= _SAMPLES * _SAMPLE_BYTES:
            f.seek(0)
            h.update(f.read())
            return
        for i in range(_SAMPLES):
            f.seek((size - _SAMPLE_BYTES) * i // (_SAMPLES - 1))
            h.update(f.read(_SAMPLE_BYTES))


def _relative_name(path: Path, root: Path | None) -> str:
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name


def source_fingerprint(source: ModelSource) -> str:
    h = hashlib.sha256()
    settings = {k: v for k, v in source.preset.to_dict().items() if k not in _COSMETIC}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    named = sorted((_relative_name(p, source.root), p) for p in dict.fromkeys(source.files))
    for name, path in named:
        _file_digest(path, name, h)
    return h.hexdigest()


def model_fingerprint(spec: str | Path) -> str:
    """Fingerprint of the model ``spec`` names, without loading it."""
    return source_fingerprint(resolve_model(spec))
