"""The text phase: every unique instruction of a run is encoded before any editor loads.

Before dispatch the driver looks up each unique instruction's embedding in the store, under a
key hashed from (text-encoder fingerprint, instruction, T5 and CLIP token limits, dtype,
numerics). The missing ones are encoded by one actor holding only T5 + CLIP (on a GPU when the
run has GPUs), one instruction at a time, and committed to the store; then that actor is ended,
so the editors, which load without text encoders, never share a device with T5. A re-run, or a
run with other rows but the same instructions, reuses the stored embeddings.

Ledger: one ``text-phase`` record: texts, encoded, reused, encode seconds, and the encoder
actor's hold on its device (load_start, load_end, stop), costed like an editor's.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.cache import canonical_json, numerics_version
from pipeline.errors import ConfigError, describe
from pipeline.ledger import LedgerWriter
from pipeline.records import Task
from pipeline.store import Store

TEXT_KEY_SCHEMA = "kontext-batch-text/1"
EMBEDDING_EXT = "safetensors"
TEXT_ACTOR = "text-encoder"
ENCODE_LOG_ENV = "KONTEXT_TEXT_ENCODE_LOG"


def embedding_key(text_fingerprint: str, text: str, limits: tuple[int, int], dtype: str) -> str:
    """Store key of one instruction's embedding (the model sees the normalised instruction, as
    planning wrote it into the task)."""
    doc = {"schema": TEXT_KEY_SCHEMA, "text_encoders": text_fingerprint, "text": text,
           "t5_max_length": int(limits[0]), "clip_max_length": int(limits[1]), "dtype": dtype,
           "numerics": numerics_version()}
    return hashlib.sha256(canonical_json(doc)).hexdigest()


class TextEncoderActor:
    """Holds only the text encoders; ``encode`` returns each text's embedding bytes."""

    def __init__(self, name: str, model: str, device: str, dtype: str, torch_threads: int | None = None) -> None:
        import torch

        from kontext_core.text_phase import load_text_encoders
        from pipeline.actors import device_type_of
        from pipeline.model_info import torch_dtype

        if torch_threads:
            torch.set_num_threads(torch_threads)
        # a file to append each encoded text to (tests count the encoder's calls)
        self.counter = os.environ.get(ENCODE_LOG_ENV)
        start = time.time()
        self.encoders = load_text_encoders(model, device, torch_dtype(dtype))
        self.info = {"actor": name, "pid": os.getpid(), "node": None, "node_ip": None,
                     "device": device if device != "cuda" else "cuda:0",
                     "device_type": device_type_of(device), "load_start": start, "load_end": time.time()}
        import ray

        if ray.is_initialized():
            self.info["node"] = ray.get_runtime_context().get_node_id()
            self.info["node_ip"] = ray.util.get_node_ip_address()

    def describe(self) -> dict[str, Any]:
        return self.info

    def encode(self, texts: Sequence[str]) -> dict[str, Any]:
        """{"data": [bytes per text], "seconds": encode seconds, "start", "end"}."""
        from kontext_core.text_phase import embedding_bytes, encode_one

        start, t0 = time.time(), time.perf_counter()
        data = []
        for text in texts:
            if self.counter:
                with open(self.counter, "a", encoding="utf-8") as f:
                    f.write(text + "\n")
            data.append(embedding_bytes(encode_one(self.encoders, text)))
        if self.info["device"].startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        return {"data": data, "seconds": time.perf_counter() - t0, "start": start, "end": time.time()}

    def stop(self) -> dict[str, Any]:
        self.encoders = None  # the device memory goes with the process; this drops it sooner
        return {**self.info, "end": time.time()}


@dataclass
class TextPhase:
    """The run's embeddings: instruction -> store key, and what the phase did."""

    keys: dict[str, str]
    encoded: int
    reused: int


def unique_instructions(tasks: Sequence[Task]) -> list[str]:
    return list(dict.fromkeys(t.instruction for t in tasks))


def run_text_phase(*, model: str, device: str, dtype: str, tasks: Sequence[Task], store: Store,
                   ledger: LedgerWriter, resources: Mapping[str, float],
                   torch_threads: int | None) -> TextPhase:
    """Encode the instructions of ``tasks`` whose embeddings are not stored yet (see the module)."""
    from kontext_core.loading import resolve_model
    from kontext_core.text_phase import text_fingerprint

    texts = unique_instructions(tasks)
    text_config = resolve_model(model).preset.text
    limits = (int(text_config.t5_max_length), int(text_config.clip_max_length))
    fingerprint = text_fingerprint(model)
    keys = {t: embedding_key(fingerprint, t, limits, dtype) for t in texts}
    found = store.present({k: EMBEDDING_EXT for k in keys.values()})
    missing = [t for t in texts if keys[t] not in found or not store.verify(keys[t], EMBEDDING_EXT)]
    if missing:
        _encode_missing(model, device, dtype, missing, keys, fingerprint, store, ledger, resources,
                        torch_threads, len(texts))
    else:
        now = time.time()
        ledger.write("text-phase", actor=None, device_type=None, texts=len(texts), encoded=0,
                     reused=len(texts), seconds=0.0, start=now, end=now)
    return TextPhase(keys=keys, encoded=len(missing), reused=len(texts) - len(missing))


def _encode_missing(model: str, device: str, dtype: str, missing: list[str], keys: Mapping[str, str],
                    fingerprint: str, store: Store, ledger: LedgerWriter, resources: Mapping[str, float],
                    torch_threads: int | None, total: int) -> None:
    import ray

    handle = ray.remote(TextEncoderActor).options(
        max_restarts=0, max_task_retries=0, **resources).remote(
        TEXT_ACTOR, model, device, dtype, torch_threads)
    try:
        info = ray.get(handle.describe.remote())
        result = ray.get(handle.encode.remote(missing))
        full = _commit_embeddings(store, keys, missing, result["data"], fingerprint, ledger.run_id)
        stopped = ray.get(handle.stop.remote())
    except ray.exceptions.RayError as exc:
        raise ConfigError(f"the text phase (T5 + CLIP encoding of the run's instructions) failed: "
                          f"{describe(exc)}; fix the model's text encoder folders and run again") from None
    finally:
        ray.kill(handle, no_restart=True)  # frees the device before the editors load
    # one record holds the actor's whole hold on its device (load, encoding, stop): the cost
    # fold bills it like an editor's (pipeline.ledger_cost), the report shows it apart
    ledger.write("text-phase", actor=info["actor"], pid=info.get("pid"), node=info.get("node"),
                 device=info.get("device"), device_type=info.get("device_type"),
                 load_start=info["load_start"], load_end=info["load_end"], start=result["start"],
                 end=result["end"], stop=stopped["end"], texts=total, encoded=len(missing),
                 reused=total - len(missing), seconds=result["seconds"])
    if full is not None:  # billed above; the run stops as a full store stops it mid-dispatch
        from pipeline.dispatch_commit import StoreFull

        raise StoreFull(f"the output store {store.root!r} is out of space ({describe(full)}) "
                        "while storing the text phase's embeddings; free space there (or pass "
                        "another --store); started again, the run resumes where it stopped", [])


def _commit_embeddings(store: Store, keys: Mapping[str, str], texts: Sequence[str],
                       data: Sequence[bytes], fingerprint: str, run_id: str) -> OSError | None:
    """Store each text's embedding; the out-of-space error that stopped it, or None."""
    for text, blob in zip(texts, data, strict=True):
        try:
            store.commit(keys[text], EMBEDDING_EXT, blob,
                         {"kind": "text-embedding", "text": text, "text_encoders": fingerprint,
                          "run_id": run_id})
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            return exc
    return None


class EmbeddingReader:
    """The driver's reads of stored embeddings for batches (a few recent ones kept in memory)."""

    def __init__(self, store: Store, keys: Mapping[str, str], keep: int = 64) -> None:
        self.store, self.keys, self.keep = store, dict(keys), keep
        self._recent: OrderedDict[str, bytes] = OrderedDict()

    def __call__(self, text: str) -> bytes | None:
        key = self.keys.get(text)
        if key is None:
            return None
        if key in self._recent:
            self._recent.move_to_end(key)
            return self._recent[key]
        data = self.store.read_verified(key, EMBEDDING_EXT)
        self._recent[key] = data
        if len(self._recent) > self.keep:
            self._recent.popitem(last=False)
        return data
