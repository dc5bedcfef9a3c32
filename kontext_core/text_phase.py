"""The text phase apart: T5 + CLIP alone, one instruction at a time, embeddings as bytes.

A batch pipeline encodes every unique instruction of a run first (only the text encoders on the
device), keeps the embeddings, frees the encoders and then loads editors without them
(``KontextEditor.load(..., text=False)``, ``edit(..., embeddings=...)``): T5-XXL is never
co-resident with the transformer and autoencoder.

    encoders = load_text_encoders("kontext-tiny", "cpu", torch.float32)
    data = embedding_bytes(encode_one(encoders, "put it on marble"))
    emb = embedding_from_bytes(data)      # a one-row TextEmbeddings for edit(embeddings=...)
    text_fingerprint("kontext-tiny")      # identity of the encoders (keys a cache of them)

Each instruction is encoded alone, so its embedding does not depend on which others a run has.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .checkpoint.layout import TEXT_FOLDERS
from .fingerprint import _file_digest, _relative_name
from .loading import load_text_encoders as _load_from_source
from .loading import resolve_model
from .text_embeddings import TextEmbeddings

if TYPE_CHECKING:  # transformers (seconds to import) only where the encoders load
    from .text import TextEncoders

__all__ = ["embedding_bytes", "embedding_from_bytes", "encode_one", "load_text_encoders", "text_fingerprint",
           "text_limits"]


def load_text_encoders(model: str | Path, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> TextEncoders:
    """Only the T5 and CLIP encoders of ``model`` (what KontextEditor.load would give it)."""
    return _load_from_source(resolve_model(model), torch.device(device), dtype)


def text_fingerprint(model: str | Path) -> str:
    """SHA-256 of the text settings and the text encoder and tokenizer files of ``model`` (a
    random preset: its settings and seed): a new transformer with the same encoders keeps it."""
    source = resolve_model(model)
    h = hashlib.sha256()
    settings = {"text": source.preset.to_dict().get("text"), "seed": source.preset.random_init_seed}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    if source.root is not None:
        text_files = [p for p in dict.fromkeys(source.files)
                      if _relative_name(p, source.root).split("/", 1)[0] in TEXT_FOLDERS]
        for name, path in sorted((_relative_name(p, source.root), p) for p in text_files):
            _file_digest(path, name, h)
    return h.hexdigest()


def text_limits(encoders: TextEncoders) -> tuple[int, int]:
    """(T5, CLIP) token limits the embeddings are cut and padded at."""
    return int(encoders.config.t5_max_length), int(encoders.clip_tokenizer.model_max_length)


@torch.inference_mode()
def encode_one(encoders: TextEncoders, text: str) -> TextEmbeddings:
    """One instruction alone: t5 [1, L, d], pooled [1, d] and its truncation flags."""
    return encoders.encode([text])


def embedding_bytes(emb: TextEmbeddings) -> bytes:
    """A one-row TextEmbeddings as safetensors bytes (flags in the metadata)."""
    from safetensors.torch import save

    meta = {"truncated": json.dumps(bool(emb.truncated[0])),
            "clip_truncated": json.dumps(bool(emb.clip_truncated[0]) if emb.clip_truncated else False)}
    return save({"t5": emb.t5.detach().cpu().contiguous(), "pooled": emb.pooled.detach().cpu().contiguous()},
                metadata=meta)


def embedding_from_bytes(data: bytes, device: str | torch.device = "cpu") -> TextEmbeddings:
    """What :func:`embedding_bytes` wrote, on ``device``."""
    from safetensors.torch import load

    tensors = load(data)
    meta = _metadata(data)
    return TextEmbeddings(tensors["t5"].to(device), tensors["pooled"].to(device),
                          [json.loads(meta.get("truncated", "false"))],
                          [json.loads(meta.get("clip_truncated", "false"))])


def _metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's ``__metadata__`` (read from the bytes' JSON header)."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + size]).get("__metadata__") or {}
