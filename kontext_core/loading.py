"""Turning a model spec (preset name, weights folder or file, HF repo id) into ready modules.

Specs understood by :func:`resolve_model`:
- a shipped preset (``tiny-random`` builds seeded random weights; a preset with ``weights`` points
  at a folder below),
- a folder in any of these layouts (see ``checkpoint.layout``):
  - diffusers: ``transformer/`` and ``vae/`` (config.json + safetensors, sharded with an index or
    not), ``text_encoder/``, ``tokenizer/``, ``text_encoder_2/``, ``tokenizer_2/``, ``scheduler/``;
  - BFL single files: ``flux1-kontext-dev.safetensors`` + ``ae.safetensors`` + the text folders;
  - native (what our training writes): BFL-named ``transformer.safetensors`` + ``ae.safetensors``,
    the text folders and ``kontext.json``;
- a BFL transformer ``.safetensors`` file (the rest beside it),
- a Hugging Face repo id (``owner/name[@revision]``), found in the local HF cache only.

An optional ``kontext.json`` beside the weights (a preset, possibly partial) names the model, sets
sampler/resolution/text settings and supplies what BFL files cannot tell (RoPE axes, GroupNorm
groups, latent scale/shift); shapes always come from the weights (+ diffusers config.json).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .autoencoder import AutoEncoder
from .checkpoint.errors import CheckpointError, ModelNotFoundError
from .checkpoint.infer import (
    BFL_UNDERIVABLE,
    bfl_autoencoder_fields,
    bfl_transformer_fields,
    diffusers_autoencoder_fields,
    diffusers_transformer_fields,
    merge_declared,
)
from .checkpoint.layout import (
    SIDECAR,
    TEXT_FOLDERS,
    WHERE_TO_PUT_FILES,
    ComponentWeights,
    check_text_folders,
    find_autoencoder,
    find_hf_snapshot,
    find_transformer,
    folder_files,
    looks_like_repo_id,
    read_json,
)
from .checkpoint.stream import fill_module, identity_rules
from .checkpoint.tables import autoencoder_rules, transformer_rules
from .config import (
    PRESET_DIR,
    T5_MAX_LENGTH_LIMIT,
    AutoencoderConfig,
    Preset,
    TransformerConfig,
    available_presets,
    load_preset,
    preset_from_dict,
)
from .transformer import KontextTransformer

if TYPE_CHECKING:  # transformers is imported only when encoders are built: resolving and
    from .text import TextEncoders  # fingerprinting a model (every CLI start) stays fast

NATIVE_PRESET_FILE = SIDECAR  # "kontext.json"
BASE_PRESET = "flux.1-kontext-dev"  # settings (sampler, resolution, text) for weights without kontext.json

__all__ = [
    "CheckpointError",
    "ModelNotFoundError",
    "ModelSource",
    "build_random",
    "load_components",
    "resolve_model",
]


@dataclass
class ModelSource:
    kind: str  # "random" | "native" | "bfl" | "diffusers" | "diffusers+bfl" | "bfl+diffusers"
    preset: Preset
    root: Path | None = None
    files: list[Path] = field(default_factory=list)  # every file that shapes outputs (fingerprint)
    transformer: ComponentWeights | None = None
    autoencoder: ComponentWeights | None = None


def resolve_model(spec: str | Path) -> ModelSource:
    """Find what ``spec`` names and describe it (shapes from headers), without loading weights."""
    spec_str = str(spec)
    if (PRESET_DIR / f"{spec_str}.json").is_file():
        preset = load_preset(spec_str)
        if preset.random_init_seed is not None:
            return ModelSource("random", preset)
        if preset.weights is None:
            raise ModelNotFoundError(f"preset {preset.name!r} ships no weights. " + WHERE_TO_PUT_FILES)
        folder = (PRESET_DIR / preset.weights).resolve()
        if not folder.is_dir():
            raise ModelNotFoundError(f"preset {preset.name!r}: its weights folder {folder} is missing; reinstall the "
                                     "package or pass a folder holding the weights")
        return _folder_source(folder, preset.name)
    path = Path(spec_str).expanduser()
    if path.is_file():
        if path.suffix not in (".safetensors", ".gguf"):
            raise ModelNotFoundError(f"{path} is a file but not a .safetensors or .gguf transformer checkpoint. "
                                     + WHERE_TO_PUT_FILES)
        return _folder_source(path.resolve().parent, path.stem, transformer_file=path.resolve())
    if path.is_dir():
        return _folder_source(path.resolve(), path.resolve().name)
    if looks_like_repo_id(spec_str):
        return _folder_source(find_hf_snapshot(spec_str), spec_str.partition("@")[0])
    raise ModelNotFoundError(
        f"model {spec_str!r} is neither a known preset ({', '.join(available_presets())}), a folder or file on "
        "disk, nor a Hugging Face repo id. " + WHERE_TO_PUT_FILES
    )


def _find_transformer(root: Path, file: Path | None) -> ComponentWeights:
    """Safetensors layouts (checkpoint.layout), else a GGUF transformer: the file named, or the
    folder's only ``*.gguf``."""
    ggufs = [file] if file is not None and file.suffix == ".gguf" else []
    if file is None and not (root / "transformer").is_dir():
        ggufs = sorted(root.glob("*.gguf"))
        if ggufs and not any(p.name != "ae.safetensors" for p in root.glob("*.safetensors")):
            if len(ggufs) > 1:
                raise ModelNotFoundError(f"{root}: several GGUF files ({', '.join(p.name for p in ggufs)}): pass "
                                         "the one to use as the model path")
        else:
            ggufs = []
    if ggufs:
        from .quant.gguf_file import gguf_transformer_file

        return gguf_transformer_file(ggufs[0])
    return find_transformer(root, file)


def _folder_source(root: Path, name: str, transformer_file: Path | None = None) -> ModelSource:
    sidecar_path = root / SIDECAR
    sidecar = read_json(sidecar_path) if sidecar_path.is_file() else None
    transformer = _find_transformer(root, transformer_file)
    autoencoder = find_autoencoder(root)
    check_text_folders(root)
    preset = _preset_for(root, name, transformer, autoencoder, sidecar, sidecar_path)
    files = [p for p in (sidecar_path, root / "model_index.json") if p.is_file()]
    files += folder_files(root / "scheduler") + transformer.files() + autoencoder.files()
    for folder in TEXT_FOLDERS:
        files += folder_files(root / folder)
    if transformer.format == autoencoder.format:
        kind = "native" if transformer.format == "bfl" and sidecar is not None else transformer.format
    else:
        kind = f"{transformer.format}+{autoencoder.format}"
    return ModelSource(kind, preset, root, files, transformer, autoencoder)


def _component_fields(weights: ComponentWeights, declared: dict[str, Any] | None, sidecar: Path) -> dict[str, Any]:
    where = weights.tensors.describe()
    if weights.format == "diffusers":
        derive = diffusers_transformer_fields if weights.component == "transformer" else diffusers_autoencoder_fields
        derived, underivable = derive(weights.config(), str(weights.config_file)), ()
    else:
        derive = bfl_transformer_fields if weights.component == "transformer" else bfl_autoencoder_fields
        derived, underivable = derive(weights.tensors.shapes(), where), BFL_UNDERIVABLE[weights.component]
    return merge_declared(derived, declared, underivable, weights.component, where, str(sidecar))


def _tokenizer_max_length(folder: Path, limit: int) -> int | None:
    config = folder / "tokenizer_config.json"
    value = read_json(config).get("model_max_length") if config.is_file() else None
    return value if isinstance(value, int) and 0 < value <= limit else None


# FlowMatchEulerDiscreteScheduler keys whose non-default values would change the schedule.
_PLAIN_SCHEDULER: dict[str, Any] = {
    "time_shift_type": "exponential", "shift_terminal": None, "invert_sigmas": False,
    "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "stochastic_sampling": False,
}


def _scheduler_settings(root: Path) -> dict[str, Any]:
    path = root / "scheduler" / "scheduler_config.json"
    if not path.is_file():
        return {}
    config = read_json(path)
    if not config.get("use_dynamic_shifting", True):
        raise CheckpointError(f"{path}: use_dynamic_shifting is false; Kontext's sampler shifts the schedule by "
                              "the image token count (FLUX.1 scheduler settings)")
    # Settings our sampler does not implement: refuse them rather than sample another schedule.
    unsupported = {key: config[key] for key, plain in _PLAIN_SCHEDULER.items()
                   if key in config and config[key] != plain}
    if unsupported:
        found = ", ".join(f"{k}={v!r}" for k, v in unsupported.items())
        raise CheckpointError(f"{path}: {found} is not supported (kontext_core samples FLUX.1's exponentially "
                              "shifted linear schedule); use the scheduler_config.json of the FLUX.1 Kontext "
                              "download or remove those keys")
    names = {"base_shift": "base_shift", "max_shift": "max_shift", "base_image_seq_len": "base_seq_len",
             "max_image_seq_len": "max_seq_len"}
    return {ours: config[theirs] for theirs, ours in names.items() if theirs in config}


def _preset_for(root: Path, name: str, transformer: ComponentWeights, autoencoder: ComponentWeights,
                sidecar: dict[str, Any] | None, sidecar_path: Path) -> Preset:
    declared = sidecar or {}
    base = load_preset(BASE_PRESET)
    d = base.to_dict()
    d["transformer"] = _component_fields(transformer, declared.get("transformer"), sidecar_path)
    d["autoencoder"] = _component_fields(autoencoder, declared.get("autoencoder"), sidecar_path)
    lengths = {"t5_max_length": _tokenizer_max_length(root / "tokenizer_2", T5_MAX_LENGTH_LIMIT),
               "clip_max_length": _tokenizer_max_length(root / "tokenizer", 10_000)}
    d["text"].update({k: v for k, v in lengths.items() if v is not None})
    d["sampler"].update(_scheduler_settings(root))
    for section in ("text", "sampler", "resolution"):
        d[section].update(declared.get(section) or {})
    same_as_base = (TransformerConfig(**d["transformer"]) == base.transformer
                    and AutoencoderConfig(**d["autoencoder"]) == base.autoencoder)
    d["name"] = declared.get("name") or (base.name if same_as_base else name)
    d["description"] = declared.get("description") or f"FLUX.1 Kontext weights ({transformer.format} transformer, {autoencoder.format} autoencoder)"
    d["weights"], d["random_init_seed"] = None, None
    try:
        return preset_from_dict(d)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{root}: inconsistent model settings ({e}); check {sidecar_path.name}") from e


def build_random(preset: Preset, seed: int) -> tuple[KontextTransformer, AutoEncoder, TextEncoders]:
    """Seeded random modules for a preset (tests, and the start of training)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = KontextTransformer(preset.transformer)
        autoencoder = AutoEncoder(preset.autoencoder)
    from .text import TextEncoders

    return transformer, autoencoder, TextEncoders.from_config(preset.text, seed + 1)


def _summary(cfg: TransformerConfig | AutoencoderConfig) -> str:
    return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items())


def load_transformer(weights: ComponentWeights, cfg: TransformerConfig, device: torch.device | str,
                     dtype: torch.dtype) -> KontextTransformer:
    """Build on the meta device, then stream the weights in (converting diffusers names).

    GGUF files and fp8 safetensors keep their compact storage (kontext_core.quant.layers)."""
    with torch.device("meta"):
        module = KontextTransformer(cfg)
    if weights.format == "gguf":
        from .quant.gguf_file import fill_from_gguf

        return fill_from_gguf(module, weights, torch.device(device), dtype, _summary(cfg))
    from .quant.fp8_scaled import fill_from_fp8, is_fp8_checkpoint

    if weights.format == "bfl" and is_fp8_checkpoint(weights):
        return fill_from_fp8(module, weights, torch.device(device), dtype, _summary(cfg))
    rules = transformer_rules(cfg) if weights.format == "diffusers" else identity_rules(module)
    return fill_module(module, weights, rules, torch.device(device), dtype, _summary(cfg))


def load_autoencoder(weights: ComponentWeights, cfg: AutoencoderConfig, device: torch.device | str,
                     dtype: torch.dtype) -> AutoEncoder:
    with torch.device("meta"):
        module = AutoEncoder(cfg)
    rules = autoencoder_rules(cfg) if weights.format == "diffusers" else identity_rules(module)
    return fill_module(module, weights, rules, torch.device(device), dtype, _summary(cfg))


def check_dtype(dtype: torch.dtype) -> None:
    """Refuse precisions the model does not run correctly in, naming the fix."""
    if dtype == torch.float16:
        # FLUX's activations and T5-XXL's feed-forward outputs exceed float16's range (±65504):
        # images come out black/NaN. BFL's reference has no float16 path either.
        raise ValueError("float16 is not supported: FLUX.1 activations overflow it (NaN or black images); "
                         "use bfloat16 on GPUs (the default on CUDA) or float32")
    if dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"dtype {dtype} is not supported; use torch.bfloat16 or torch.float32")


def load_text_encoders(source: ModelSource, device: torch.device | str, dtype: torch.dtype) -> TextEncoders:
    """The T5 and CLIP encoders of ``source`` alone (the weights load_components would give)."""
    check_dtype(dtype)
    from .text import TextEncoders

    if source.kind == "random":
        # build_random's encoders: their own seeded RNG, independent of the other modules
        text = TextEncoders.from_config(source.preset.text, (source.preset.random_init_seed or 0) + 1)
    elif source.root is not None:
        text = TextEncoders.from_folders(source.root, source.preset.text, dtype)
    else:
        raise ValueError(f"model source of kind {source.kind!r} names no weights")
    return text.to(device=device, dtype=dtype).eval()


def load_components(source: ModelSource, device: torch.device | str, dtype: torch.dtype, text: bool = True
                    ) -> tuple[KontextTransformer, AutoEncoder, TextEncoders | None]:
    """``text=False``: no text encoders (the caller brings precomputed embeddings to ``edit``)."""
    check_dtype(dtype)
    if source.kind == "random":
        transformer, autoencoder, _ = build_random(source.preset, source.preset.random_init_seed or 0)
        transformer, autoencoder = transformer.to(device=device, dtype=dtype), autoencoder.to(device=device, dtype=dtype)
    elif source.transformer is not None and source.autoencoder is not None and source.root is not None:
        transformer = load_transformer(source.transformer, source.preset.transformer, device, dtype)
        autoencoder = load_autoencoder(source.autoencoder, source.preset.autoencoder, device, dtype)
    else:
        raise ValueError(f"model source of kind {source.kind!r} names no weights")
    # Loaded weights are already on ``device`` in ``dtype``; no module-wide .to(dtype) here, it would
    # widen the float8 storage of fp8 checkpoints.
    encoders = load_text_encoders(source, device, dtype) if text else None
    return transformer.eval(), autoencoder.eval(), encoders
