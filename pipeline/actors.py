"""The Ray actor that holds one model: load once in ``__init__``, edit batches after.

One actor per GPU (``num_gpus=1``) or, on CPU-only clusters, CPU actors that leave CPU for
Ray's own tasks (the runner sizes them). The actor runs the batches the driver keeps in
flight (two by default) at once: while one holds the model (a lock), the other decodes and
resizes its sources or encodes its outputs in a small thread pool, so CPU work overlaps model
work. One more thread stays free for ``describe`` and ``stop``, so they never wait behind
batches.

Failure classes (pipeline.errors) are decided here, where the exception is seen:
- a row whose source bytes do not decode, or that the model refuses alone -> ``bad-row``;
- CUDA out of memory -> ``transient`` with ``oom=True`` (the driver halves the batch);
- a sticky CUDA error -> the process exits (``os._exit(1)``): the CUDA context is unusable,
  Ray restarts the actor, the driver sees the actor die and retries its rows;
- anything else -> ``transient`` for every row of the batch.
The driver owns retries (``max_task_retries=0``), so every try is classified and recorded.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from PIL import Image

from pipeline.encode import encode_image
from pipeline.errors import (
    BAD_ROW,
    POISONED_DEVICE,
    TRANSIENT,
    classify_exception,
    describe,
    is_cuda_oom,
)
from pipeline.faults import maybe_inject
from pipeline.image_io import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from pipeline.loras import AdapterCache
from pipeline.records import clip_truncation_notes

# (model, device, torch dtype) -> editor; called with fp8=True / compile=True as well when a run
# asks for them (and only then, so factories without those options keep working)
EditorFactory = Callable[..., Any]

# Matched in order against the CUDA device name (longer names first: "GH200" is not an "H200").
_DEVICE_TYPES = ("GH200", "H200", "H100", "B200", "A100", "A10G", "A10", "L40S", "L40", "L4")
# kontext_core's timing names -> ledger phase names
_MODEL_PHASES = {"text_encode": "text_encode", "context_encode": "context_encode",
                 "denoise": "denoise", "decode": "decode_latents"}


def load_kontext_editor(model: str, device: str, dtype: Any, fp8: bool = False, compile: bool = False,
                        memory_plan: str = "resident", memory: str = "auto", text: bool = True) -> Any:
    """The production editor factory: kontext_core's load_with_plan (KontextEditor.load's
    loading, under the run's memory plan, checked to fit this actor's device before any weight
    is read).

    fp8: the fast path's fp8 linears (emulated, with a note on stderr, where the device has no fp8
    matmul). compile: the exact path's fused RoPE + per-block torch.compile; each new shape
    compiles on its first batch, into the on-disk cache ($KONTEXT_COMPILE_CACHE or the user cache
    dir) that the node's other actors and later runs load instead of compiling again.
    memory_plan: the plan the driver keyed the cache with (its storage changes pixels, so the
    actor loads that one, never one of its own choosing); memory: the size it must fit.
    text=False: no text encoders (the run's text phase encoded its instructions first)."""
    from kontext_core.quant.load import load_with_plan
    from kontext_core.speed import SpeedOptions

    return load_with_plan(model, device=device, dtype=dtype, memory=memory, plan=memory_plan,
                          speed=SpeedOptions(fp8=fp8, fused_rope=compile, compile=compile), text=text)


def memory_figures(editor: Any, device: str, peak: int | None) -> dict[str, Any]:
    """The ledger's memory figures of one batch: the plan, the weight bytes resident on the
    device after the call (what stays there between calls) and the device's peak allocation
    during it (None on the CPU, where torch keeps no such count)."""
    plan = getattr(getattr(editor, "memory", None), "plan", None)
    resident = None
    if all(hasattr(editor, name) for name in ("transformer", "autoencoder", "text", "device")):
        from kontext_core.quant.load import resident_bytes

        resident = int(resident_bytes(editor))
    return {"plan": getattr(plan, "name", "resident"), "resident_bytes": resident,
            "peak_device_bytes": peak}


def _reset_peak(device: str) -> bool:
    """Start a batch's peak count (CUDA only); whether there is one."""
    if not device.startswith("cuda"):
        return False
    import torch

    torch.cuda.reset_peak_memory_stats(torch.device(device))
    return True


def _peak(device: str) -> int:
    import torch

    return int(torch.cuda.max_memory_allocated(torch.device(device)))


def device_type_of(device: str) -> str:
    """Ledger device type: H100/H200/A100/L40S from the CUDA device name, CPU for CPUs."""
    if not device.startswith("cuda"):
        return "CPU"
    import torch

    name = torch.cuda.get_device_name(torch.device(device)).upper()
    return device_type_from_name(name)


def device_type_from_name(name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'H100'; an unlisted card keeps its name minus the vendor."""
    name = name.upper()
    for known in _DEVICE_TYPES:
        if re.search(rf"(?<![A-Z0-9]){known}(?![A-Z0-9])", name):
            return known
    return name.removeprefix("NVIDIA ").strip()


def check_priced(device_type: str, priced: Sequence[str] | None) -> None:
    """Raise when the run's pricing has no price for this device: the report could not cost its
    work, so the actor refuses before doing any (instead of the report failing afterwards)."""
    if priced is not None and device_type not in priced:
        raise RuntimeError(
            f"device type {device_type!r} on node {os.uname().nodename} has no price in this run's pricing "
            f"(priced: {', '.join(sorted(priced))}). Fix: add `{device_type}: <price per device-hour>` under "
            "device_hour in pipeline/pricing.yaml or in the file given with --pricing")


def check_same_model(editor: Any, expected: Mapping[str, Any], model: str) -> None:
    """Raise when the loaded editor is not the model the driver keyed the cache with."""
    host = os.uname().nodename
    want = expected.get("fingerprint")
    got = getattr(editor, "fingerprint", None)
    if want is not None and got is not None and got != want:
        raise RuntimeError(
            f"model {model!r} on node {host} is not the one the driver planned with (weights fingerprint "
            f"{got[:12]} here, {want[:12]} on the driver); its outputs would be cached under the wrong "
            "key. Fix: give every node the same copy of the weights (or an absolute path to a shared one)")
    want_numerics = expected.get("numerics")
    if want_numerics is not None:
        from pipeline.cache import numerics_version

        if numerics_version() != want_numerics:
            raise RuntimeError(
                f"kontext_core on node {host} has numerics {numerics_version()!r}, the driver "
                f"{want_numerics!r}: the same key would give different pixels. Fix: install the same "
                "kontext-batch version on every node")


class _RowFailure(Exception):
    def __init__(self, error_class: str, message: str) -> None:
        super().__init__(message)
        self.error_class = error_class


def decode_source(data: bytes, expected_sha256: str, resize_to: Callable | None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """Source bytes -> (RGB image resized to the model's context size when known, notes).

    Decoding rules (pixel limit before decoding, EXIF orientation, animation, colour modes)
    live in pipeline.image_io; every refusal is a bad row with its reason."""
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise _RowFailure(BAD_ROW, "source image changed after planning (its sha256 differs "
                                   "from the planned one); run again to use the new file")
    try:
        decoded = decode_image(data, max_pixels)
    except ImageDecodeError as exc:
        raise _RowFailure(BAD_ROW, str(exc)) from exc
    rgb = decoded.image
    if resize_to is not None:
        size = tuple(resize_to(rgb.size))
        if rgb.size != size:  # the same LANCZOS resize the model would do, done off the lock
            rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    return rgb, decoded.notes


class EditorActor:
    """Holds one loaded editor; ``edit_batch`` turns source bytes into encoded outputs."""

    def __init__(self, name: str, model: str, device: str, dtype: str,
                 editor_factory: EditorFactory | None = None,
                 faults: Sequence[Mapping[str, Any]] = (),
                 torch_threads: int | None = None, fp8: bool = False, compile: bool = False,
                 expected: Mapping[str, Any] | None = None, memory_plan: str | None = None,
                 memory: str = "auto", text_phase: bool = False) -> None:
        """expected: {"fingerprint", "numerics"} the driver built cache keys with; an actor whose
        loaded model differs (another copy of the weights on its node, another kontext_core)
        refuses to start rather than store its outputs under keys that name other weights."""
        import torch

        from pipeline.model_info import torch_dtype

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.name = name
        self.faults = list(faults)
        self.load_start = time.time()
        device_type = device_type_of(device)
        check_priced(device_type, (expected or {}).get("priced_devices"))  # before the load's GPU time
        factory = editor_factory or load_kontext_editor
        # options are passed only when on, so factories without them keep working for plain runs
        options: dict[str, Any] = {name: True for name, on in (("fp8", fp8), ("compile", compile)) if on}
        if memory_plan not in (None, "resident"):
            options["memory_plan"] = memory_plan
        if memory != "auto":
            options["memory"] = memory
        if text_phase and editor_factory is None:  # batches bring embeddings: no T5 here
            options["text"] = False
        self.editor = factory(model, device, torch_dtype(dtype), **options)
        self.load_end = time.time()
        check_same_model(self.editor, expected or {}, model)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="io")
        node = ip = None
        import ray

        if ray.is_initialized():  # outside Ray (in-process use) asking would start a Ray
            node = ray.get_runtime_context().get_node_id()
            ip = ray.util.get_node_ip_address()
        self.info = {"actor": name, "pid": os.getpid(), "node": node, "node_ip": ip,
                     "device": device if device != "cuda" else "cuda:0",
                     "device_type": device_type, "load_start": self.load_start,
                     "load_end": self.load_end}
        self.info["memory"] = memory_figures(self.editor, self.info["device"], None)
        self._takes_embeddings = _accepts(getattr(self.editor, "edit", None), "embeddings")
        # LoRA files are read once per actor (by hash); the base model stays resident and the
        # editor switches adapter sets between batches (a repeated set costs nothing)
        self._adapters = AdapterCache()
        self._takes_loras = _accepts(getattr(self.editor, "edit", None), "loras")

    def describe(self) -> dict[str, Any]:
        """Who this actor is and when it loaded the model (for the actor-load record)."""
        return self.info

    def stop(self) -> dict[str, Any]:
        """Called at the end of a run: the last moment this actor held the device."""
        return {**self.info, "end": time.time()}

    # -- one batch ----------------------------------------------------------------------
    def edit_batch(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        """batch: {steps, guidance, size, batch_id, marks, rows: [{row_index, row_id, key,
        instruction, seed, image_bytes, image_sha256, output_format, params}]} -> {actor,
        rows: [result]}. ``marks`` (pipeline.dispatch_marks) is told ``batch_id`` before the
        model call, so a death in it is charged to this batch alone."""
        start = time.time()
        rows = list(batch["rows"])
        results: dict[int, dict[str, Any]] = {}
        resize_to = getattr(self.editor, "context_size_for", None)
        max_pixels = int(batch.get("max_pixels") or DEFAULT_MAX_PIXELS)
        notes: dict[int, list[str]] = {}

        def decode(row: Mapping[str, Any]) -> tuple[Image.Image | None, str | None, float]:
            t0 = time.perf_counter()
            try:
                img, notes[row["row_index"]] = decode_source(
                    row["image_bytes"], row["image_sha256"], resize_to, max_pixels)
                return img, None, time.perf_counter() - t0
            except _RowFailure as exc:
                return None, str(exc), time.perf_counter() - t0

        decoded = list(self._pool.map(decode, rows))
        ready: list[tuple[Mapping[str, Any], Image.Image, float]] = []
        for row, (img, error, seconds) in zip(rows, decoded, strict=True):
            if img is None:
                results[row["row_index"]] = _failure(row, BAD_ROW, error, start,
                                                     {"decode": seconds})
            else:
                ready.append((row, img, seconds))

        edited = self._edit(ready, batch, start) if ready else []
        for row, outcome in edited:
            outcome["notes"] = (notes.get(row["row_index"], []) + clip_truncation_notes(outcome)
                                if outcome["ok"] else [])
            results[row["row_index"]] = outcome
        end = time.time()
        ordered = [results[r["row_index"]] for r in rows]
        for res in ordered:
            res["start"], res["end"] = start, end
        return {"actor": self.info, "rows": ordered}

    def _edit(self, ready: list[tuple[Mapping[str, Any], Image.Image, float]],
              batch: Mapping[str, Any], start: float) -> list[tuple[Mapping[str, Any], dict]]:
        """Run the model on ``ready`` rows; on a request error with several rows, try each
        row alone so one bad row cannot fail its neighbours."""
        rows = [r for r, _, _ in ready]
        given = self._embeddings(batch)
        lora_args, lora_error = self._lora_args(batch)
        if lora_error is not None:  # the batch's adapters cannot be used: each of its rows says why
            return [(row, _failure(row, BAD_ROW, lora_error, start, {"decode": secs}))
                    for row, _, secs in ready]
        t0 = None
        try:
            with self._lock:
                t0 = time.perf_counter()  # the device is this call's from here
                _mark_started(batch, self.name)
                counting = _reset_peak(self.info["device"])
                try:
                    maybe_inject(self.faults, [r["row_id"] for r in rows])
                    out = self.editor.edit(
                        images=[img for _, img, _ in ready],
                        instructions=[r["instruction"] for r in rows],
                        seeds=[int(r["seed"]) for r in rows],
                        steps=batch.get("steps"), guidance=batch.get("guidance"),
                        size=tuple(batch["size"]) if batch.get("size") else None,
                        **({"step_cache": batch["step_cache"]} if batch.get("step_cache") else {}),
                        **({"embeddings": given} if given else {}), **lora_args)
                except Exception as exc:
                    # still holding the model: no batch queued behind starts (and is marked
                    # as started) on a device this process is about to give up
                    self._exit_if_poisoned(exc)
                    raise
                memory = memory_figures(self.editor, self.info["device"],
                                        _peak(self.info["device"]) if counting else None)
        except Exception as exc:
            # The failed call held the device this long: its rows' attempts carry it (phase
            # failed_model), so the report costs failed attempts, not only successful ones.
            failed_s = (time.perf_counter() - t0) / len(ready) if t0 is not None else 0.0
            error_class = BAD_ROW if _is_lora_error(exc) else classify_exception(exc)
            if error_class == BAD_ROW and len(ready) > 1 and not _is_lora_error(exc):
                alone = [pair for item in ready for pair in self._edit([item], batch, start)]
                for _row, outcome in alone:  # the batch call that failed is theirs too
                    outcome["phases"]["failed_model"] = \
                        outcome["phases"].get("failed_model", 0.0) + failed_s
                return alone
            oom = is_cuda_oom(exc)
            if oom:
                _free_cuda_cache()
            why = str(exc) if _is_lora_error(exc) else describe(exc)
            return [(row, _failure(row, error_class, why, start,
                                   {"decode": secs, "failed_model": failed_s}, oom=oom))
                    for row, _, secs in ready]

        n = len(ready)
        shared = {phase: float(out.timings.get(src, 0.0)) / n
                  for src, phase in _MODEL_PHASES.items()}
        truncated = list(getattr(out, "truncated", []) or [False] * n)
        clip_cut = list(getattr(out, "clip_truncated", []) or [False] * n)

        def encode(i: int) -> tuple[bytes | None, str | None, float]:
            row = rows[i]
            t0 = time.perf_counter()
            try:
                data = encode_image(out.images[i], row["output_format"], row["params"])
                return data, None, time.perf_counter() - t0
            except Exception as exc:  # deterministic for these inputs: a row problem
                return None, f"encoding the output failed: {describe(exc)}", \
                    time.perf_counter() - t0

        encoded = list(self._pool.map(encode, range(n)))
        outcomes = []
        for i, (row, _img, decode_s) in enumerate(ready):
            data, error, encode_s = encoded[i]
            phases = {"decode": decode_s, **shared, "file_encode": encode_s}
            if data is None:
                outcomes.append((row, _failure(row, BAD_ROW, error, start, phases)))
                continue
            outcomes.append((row, {
                "row_index": row["row_index"], "key": row["key"], "ok": True,
                "error_class": None, "error": None, "oom": False, "data": data,
                "phases": phases, "truncated": bool(truncated[i]) if i < len(truncated) else False,
                "clip_truncated": bool(clip_cut[i]) if i < len(clip_cut) else False,
                "size": list(out.images[i].size), "memory": memory}))
        return outcomes


    def _lora_args(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], str | None]:
        """edit()'s loras/lora_mode for this batch (every batch names its set, [] the base model,
        so the previous batch's adapters never leak), or why the batch's adapters cannot be used."""
        wire = batch.get("loras")
        if not wire and not self._adapters.used:  # no adapter was ever applied: nothing to undo
            return {}, None
        if not self._takes_loras:
            return {}, ("this editor cannot apply LoRA adapters (its edit() takes no loras)"
                        if wire else None)
        try:
            loras, mode = self._adapters.adapters(wire)  # marks the cache used
        except ValueError as exc:  # LoraError: the file is gone or changed since planning
            return {}, str(exc)
        return {"loras": loras, "lora_mode": mode}, None

    def _embeddings(self, batch: Mapping[str, Any]) -> dict[str, Any] | None:
        """The batch's stored instruction embeddings, decoded (off the model lock), for an
        editor whose edit takes them."""
        wired = batch.get("embeddings")
        if not wired or not self._takes_embeddings:
            return None
        from kontext_core.text_phase import embedding_from_bytes

        device = getattr(self.editor, "device", "cpu")
        return {text: embedding_from_bytes(data, device) for text, data in wired.items()}

    def _exit_if_poisoned(self, exc: BaseException) -> None:
        if classify_exception(exc) == POISONED_DEVICE:
            print(f"[{self.name}] poisoned device, exiting so Ray restarts this actor: "
                  f"{describe(exc)}", file=sys.stderr, flush=True)
            sys.stderr.flush()
            os._exit(1)


def _accepts(fn: Any, name: str) -> bool:
    import inspect

    try:
        return fn is not None and name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _is_lora_error(exc: BaseException) -> bool:
    """kontext_core's LoraError (set_loras refused the batch's set): the same for every row."""
    return type(exc).__name__ == "LoraError"


def _mark_started(batch: Mapping[str, Any], actor: str) -> None:
    """Tell the driver's start-marks tracker (pipeline.dispatch_marks) that this batch begins
    its model call, and wait until it knows: if the call kills the process, the driver
    charges this batch and not the one queued behind it. Without a tracker (in-process use)
    or when it cannot be reached, the batch runs unmarked (the driver then charges it if it
    is lost alone)."""
    marks = batch.get("marks")
    if marks is None:
        return
    import ray

    try:
        ray.get(marks.mark.remote(actor, batch["batch_id"]), timeout=30)
    except Exception as exc:
        print(f"[{actor}] could not mark batch {batch.get('batch_id')} started: "
              f"{describe(exc)}", file=sys.stderr, flush=True)


def _failure(row: Mapping[str, Any], error_class: str, error: str | None, start: float,
             phases: Mapping[str, float], oom: bool = False) -> dict[str, Any]:
    return {"row_index": row["row_index"], "key": row["key"], "ok": False,
            "error_class": error_class or TRANSIENT, "error": error, "oom": oom, "data": None,
            "phases": dict(phases), "truncated": False, "clip_truncated": False, "size": None, "notes": []}


def _free_cuda_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass
