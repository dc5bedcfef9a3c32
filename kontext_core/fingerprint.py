"""Model fingerprint: a cheap, stable identity of the weights for cache keys.

For weight files: SHA-256 over, per file (sorted by name), its name, size, safetensors header
(every key, dtype, shape, offset) and 16 evenly spaced 64 KiB samples of its bytes, plus the
preset. Reading ~1 MiB per file keeps it cheap for a 24 GB checkpoint, while any re-saved or
fine-tuned file changes its header or its sampled bytes. Random presets hash their preset only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .loading import ModelSource, resolve_model

_SAMPLES = 16
_SAMPLE_BYTES = 64 * 1024


def _file_digest(path: Path, h: hashlib._Hash) -> None:
    size = path.stat().st_size
    h.update(f"{path.name}:{size}".encode())
    with path.open("rb") as f:
        head = f.read(8)
        if path.suffix == ".safetensors" and len(head) == 8:
            header_len = int.from_bytes(head, "little")
            h.update(f.read(min(header_len, 100_000_000)))
        for i in range(_SAMPLES):
            f.seek(max(0, (size - _SAMPLE_BYTES) * i // max(1, _SAMPLES - 1)))
            h.update(f.read(_SAMPLE_BYTES))


def source_fingerprint(source: ModelSource) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(source.preset.to_dict(), sort_keys=True, default=str).encode())
    for path in sorted(source.files, key=lambda p: p.as_posix()):
        _file_digest(path, h)
    return h.hexdigest()


def model_fingerprint(spec: str | Path) -> str:
    """Fingerprint of the model ``spec`` names, without loading it."""
    return source_fingerprint(resolve_model(spec))
