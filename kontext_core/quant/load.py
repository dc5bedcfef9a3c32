"""``load_with_plan``: a KontextEditor whose weights follow a memory plan (see ``plans``).

    editor = load_with_plan("/models/kontext", device="cuda", dtype=torch.bfloat16, memory="24GB")
    editor.memory.plan.name        # "fp8-model-offload"
    editor.memory.plan.key_settings()  # {"storage": "fp8"}: what goes into the cache key

The plan is chosen and checked against the device before any weight is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint.safetensors_io import TensorSource
from ..editor import DEFAULT_MODEL, KontextEditor
from ..fingerprint import source_fingerprint
from ..loading import ModelSource, load_components, resolve_model
from ..speed.options import SpeedOptions, apply_speed
from .layers import cast_to_fp8
from .offload import BlockStream, ModelOffload
from .plans import CLIP_L_PARAMS, T5_XXL_PARAMS, Estimate, PlanError, choose_plan, weight_bytes


@dataclass
class MemoryReport:
    plan: object  # MemoryPlan
    estimate: Estimate
    fp8_layers: int = 0
    model_offload: ModelOffload | None = None
    streams: list[BlockStream] = field(default_factory=list)


def _folder_params(folder: Path) -> int | None:
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        return None
    import math

    return sum(math.prod(info.shape) for info in TensorSource(files).infos.values())


def text_parameter_counts(source: ModelSource) -> tuple[int, int]:
    """(T5, CLIP) parameter counts: from the text folders' headers, else the preset's config
    (small models), else the published encoders'."""
    if source.root is not None:
        t5, clip = _folder_params(source.root / "text_encoder_2"), _folder_params(source.root / "text_encoder")
        if t5 is not None and clip is not None:
            return t5, clip
    text = source.preset.text
    if getattr(text, "t5_config", None):
        from ..text import TextEncoders

        with torch.device("meta"):
            encoders = TextEncoders.from_config(text, 0)
        return (sum(p.numel() for p in encoders.t5.parameters()),
                sum(p.numel() for p in encoders.clip.parameters()))
    return T5_XXL_PARAMS, CLIP_L_PARAMS


def compact_weight_bytes(source: ModelSource) -> dict[str, int]:
    """Layer name -> bytes of its weight as the transformer file stores it, for the Linear weights
    loading keeps in that form: GGUF-quantized blocks (GGUFLinear) and fp8 tensors (CastLinear,
    plus a float32 scale). Read from the headers; empty for plain bf16/fp32 files."""
    weights = source.transformer
    if weights is None:
        return {}
    infos = weights.tensors.infos
    if weights.format == "gguf":
        from . import ggml

        qtypes = weights.tensors.qtypes  # type: ignore[attr-defined]
        return {key[: -len(".weight")]: info.nbytes for key, info in infos.items()
                if key.endswith(".weight") and len(info.shape) == 2 and qtypes[key] not in ggml.PLAIN}
    from .fp8_scaled import FP8_NAMES

    return {key[: -len(".weight")]: info.nbytes + 4 for key, info in infos.items()
            if key.endswith(".weight") and len(info.shape) == 2 and info.dtype in FP8_NAMES}


def plan_for(model: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, memory: str = "auto", plan: str | None = None,
             size: tuple[int, int] = (1024, 1024), text: bool = True) -> Estimate:
    """The plan (and its predicted bytes) ``load_with_plan`` would use; reads headers only.
    ``text=False``: for an editor without text encoders (their embeddings computed apart)."""
    source = resolve_model(model)
    counts = text_parameter_counts(source) if text else (0, 0)
    return choose_plan(memory, source.preset, dtype, torch.device(device), counts, plan, size,
                       compact_weight_bytes(source))


def load_with_plan(model: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, memory: str = "auto", plan: str | None = None,
                   speed: SpeedOptions | None = None, size: tuple[int, int] = (1024, 1024),
                   text: bool = True) -> KontextEditor:
    """Load ``model`` under the plan for ``memory`` (or the named ``plan``); ``editor.memory``
    reports the plan, its estimate and the offload hooks. ``text=False``: no text encoders (edit
    takes precomputed embeddings; a batch pipeline encodes every instruction first)."""
    source = resolve_model(model)
    device = torch.device(device)
    counts = text_parameter_counts(source) if text else (0, 0)  # no encoders: none to plan for
    chosen = choose_plan(memory, source.preset, dtype, device, counts, plan, size, compact_weight_bytes(source))
    speed = speed or SpeedOptions()
    if speed.fp8 and chosen.plan.storage == "fp8":
        raise PlanError("--fp8 (fp8 matmuls) and the fp8 storage plan both re-store the block linears: use one "
                        "(--fp8 needs the transformer resident in the compute dtype)")
    if speed.compile and chosen.plan.offload != "none":
        raise PlanError(f"--compile is not supported with the {chosen.plan.name} plan (offload hooks move weights "
                        "between calls); use a resident plan or drop --compile")
    # Offload plans keep weights on the host; the fp8 plan casts there too before moving, so the
    # device never holds the bf16 transformer (22 GiB: more than the 16-24 GB cards it is for).
    on_host = chosen.plan.offload != "none" or chosen.plan.storage == "fp8"
    home = torch.device("cpu") if on_host else device
    transformer, autoencoder, text = load_components(source, home, dtype, text=text)
    encoders = {"t5": text.t5, "clip": text.clip} if text is not None else {}
    report = MemoryReport(chosen.plan, chosen)
    if chosen.plan.storage == "fp8":
        report.fp8_layers = cast_to_fp8(transformer)
    if chosen.plan.offload == "none" and home != device:  # cast on the host: now move, resident
        for module in (transformer, autoencoder, *encoders.values()):
            module.to(device)
    speed_report = apply_speed(transformer, speed)
    if chosen.plan.offload == "model":
        report.model_offload = ModelOffload({**encoders, "encoder": autoencoder.encoder,
                                             "transformer": transformer, "decoder": autoencoder.decoder}, device)
    elif chosen.plan.offload == "partial":
        blocks = [*transformer.double_blocks, *transformer.single_blocks]
        tail = blocks[len(blocks) - chosen.streamed_blocks:] if chosen.streamed_blocks else []
        if tail:
            report.streams.append(BlockStream(tail, device))
        _move_except(transformer, tail, device)  # the other blocks and the rest: resident
        for module in (autoencoder, *encoders.values()):
            module.to(device)
    elif chosen.plan.offload == "group":
        blocks = [*transformer.double_blocks, *transformer.single_blocks]
        report.streams.append(BlockStream(blocks, device))
        # what is outside the blocks stays on the device
        _move_except(transformer, [transformer.double_blocks, transformer.single_blocks], device)
        clip = {}
        if text is not None:
            report.streams.append(BlockStream(list(text.t5.encoder.block), device))
            _move_except(text.t5, [text.t5.encoder.block], device)
            clip = {"clip": text.clip}
        report.model_offload = ModelOffload({**clip, "encoder": autoencoder.encoder,
                                             "decoder": autoencoder.decoder}, device)
    editor = KontextEditor(source.preset, transformer, autoencoder, text, device, dtype, source_fingerprint(source),
                           speed, speed_report)
    editor.memory = report
    return editor


def _move_except(module: torch.nn.Module, streamed: list[torch.nn.Module], device: torch.device) -> None:
    inside = {id(m) for s in streamed for m in s.modules()}
    for owner in module.modules():
        if id(owner) in inside:
            continue
        for t in owner._parameters.values():
            if t is not None:
                t.data = t.data.to(device)
        for name, t in list(owner._buffers.items()):
            if t is not None:
                owner._buffers[name] = t.to(device)


def resident_bytes(editor: KontextEditor) -> int:
    """Weight bytes on the editor's device right now (between calls, for offload plans: what
    stays there). On the CPU every byte is 'resident'."""
    total = 0
    for module in (editor.transformer, editor.autoencoder, editor.text):
        if module is None:  # loaded without text encoders
            continue
        total += sum(n for where, n in weight_bytes(module).items() if torch.device(where).type == editor.device.type)
    return total
