"""The driver keys a run's embeddings (text_fingerprint) and an editor decodes stored ones
(embedding_from_bytes) without importing transformers: only the text-encoder actor pays
for it (seconds per process, on every resumed or killed-and-rerun run)."""

from __future__ import annotations

import subprocess
import sys

from pipeline_helpers import REPO

SCRIPT = """
import sys, torch
from safetensors.torch import save
from kontext_core.text_phase import embedding_from_bytes, text_fingerprint
from kontext_core.text_embeddings import TextEmbeddings
assert len(text_fingerprint("kontext-tiny")) == 64
emb = embedding_from_bytes(save({"t5": torch.zeros(1, 2, 3), "pooled": torch.zeros(1, 3)},
                                metadata={"truncated": "true"}))
assert isinstance(emb, TextEmbeddings) and emb.truncated == [True]
print("transformers" in sys.modules)
"""


def test_keying_and_decoding_embeddings_do_not_import_transformers() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


def test_the_encoders_embeddings_are_the_same_class() -> None:
    from kontext_core import text, text_embeddings

    assert text.TextEmbeddings is text_embeddings.TextEmbeddings
