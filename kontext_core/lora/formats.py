"""Reading LoRA files in the layouts found in the wild, into LoraAdapter (native module names).

Formats (names as in diffusers' ``lora_conversion_utils``, where each has a conversion):
- ``diffusers``: PEFT keys on diffusers module names, ``transformer.<module>.lora_A/lora_B.weight``
  (diffusers' ``save_lora_weights``), alphas from the ``lora_adapter_metadata`` (PEFT's LoraConfig:
  ``lora_alpha``, ``alpha_pattern``, ``use_rslora``) or from ``<module>.alpha`` tensors, else 1.
- ``kohya`` (sd-scripts, also ComfyUI exports): ``lora_unet_<native_name_with_underscores>``
  ``.lora_down.weight / .lora_up.weight / .alpha``; scale alpha / rank (alpha defaults to rank).
- ``xlabs``: ``double_blocks.N.processor.{qkv,proj}_lora{1,2}.{down,up}.weight`` (1: image stream,
  2: text stream), ``single_blocks.N.processor.{qkv,proj}_lora.*`` (qkv: the q|k|v rows of
  ``linear1``); no alpha.
- ``native``: PEFT keys on our (BFL) module names: fal's Kontext LoRAs
  (``base_model.model.double_blocks.N.img_attn.qkv.lora_A.weight``, optional ``lora_B.bias``) and
  ComfyUI's ``diffusion_model.…lora_A/lora_B``; no alpha.
Only the transformer is adapted: text-encoder layers are refused, not silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors

from .adapter import LoraAdapter, LoraPiece
from .errors import MISMATCH, MISSING, NOT_LORA, UNSUPPORTED, LoraError
from .names import Target, any_target, diffusers_target

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # what save_lora_weights writes in a folder
_TEXT_ENCODER = ("lora_te", "text_encoder", "text_encoders.", "lora_te1_", "lora_te2_")
_UNSUPPORTED_MARKS = {  # key fragment -> what it is
    "lokr_": "a LoKr (LyCORIS) adapter", "hada_": "a LoHa (LyCORIS) adapter",
    "dora_scale": "a DoRA adapter", "lora_magnitude_vector": "a DoRA adapter",
    "query_norm.scale": "a FLUX Control LoRA (it replaces norms and widens img_in)",
    "norm_q.weight": "a FLUX Control LoRA (it replaces norms and widens img_in)",
}
_XLABS = re.compile(r"^(?:diffusion_model\.)?(double_blocks|single_blocks)\.(\d+)\.processor\."
                    r"(qkv_lora1|proj_lora1|qkv_lora2|proj_lora2|qkv_lora|proj_lora)\.(down|up)\.weight$")
_XLABS_TARGETS = {
    ("double_blocks", "qkv_lora1"): ("img_attn.qkv", None), ("double_blocks", "proj_lora1"): ("img_attn.proj", None),
    ("double_blocks", "qkv_lora2"): ("txt_attn.qkv", None), ("double_blocks", "proj_lora2"): ("txt_attn.proj", None),
    ("single_blocks", "qkv_lora"): ("linear1", (0, 1, 2)), ("single_blocks", "proj_lora"): ("linear2", None),
}
_FOR_THIS_MODEL = "use a LoRA trained for FLUX.1 (Kontext) transformers"


def lora_file(path: str | Path) -> Path:
    """The safetensors file a spec names: the file itself, or the LoRA file inside a folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        found = [p / DIFFUSERS_FILE] if (p / DIFFUSERS_FILE).is_file() else sorted(p.glob("*.safetensors"))
        if len(found) != 1:
            raise LoraError(p, f"folder holds {len(found)} .safetensors files, not one LoRA file",
                            f"name the adapter file itself, e.g. {p / DIFFUSERS_FILE}", MISSING if not found else NOT_LORA)
        return found[0]
    if not p.is_file():
        raise LoraError(p, "file not found", "check the path (relative paths resolve against the manifest's "
                        "folder for rows, the working directory for --lora)", MISSING)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise LoraError(p, f"{p.suffix} files are pickles (loading one can run code) and are not read",
                        "convert it to .safetensors (e.g. safetensors.torch.save_file(torch.load(f)))", UNSUPPORTED)
    return p


def _read(path: Path) -> tuple[bytes, dict[str, torch.Tensor], dict[str, str]]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LoraError(path, f"cannot be read ({e.strerror or e})", "check the file's permissions", MISSING) from e
    not_st = LoraError(path, "is not a safetensors file", "pass a LoRA adapter saved as .safetensors", NOT_LORA)
    if len(data) < 8 or 8 + int.from_bytes(data[:8], "little") > len(data):
        raise not_st
    try:
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        tensors = load_safetensors(data)
    except Exception as e:  # safetensors raises its own error types for every kind of damage
        raise not_st from e
    metadata = (header.get("__metadata__") or {}) if isinstance(header, dict) else {}
    return data, tensors, metadata


def load_lora(path: str | Path) -> LoraAdapter:
    """Read one adapter file (or a diffusers LoRA folder) into native module names.

    Raises LoraError (with ``.kind``) for a missing file, a file that is not a LoRA, a LoRA variant
    we do not apply, or names no FLUX transformer has. Shapes are checked against a model by
    ``check_loras`` / when applied (``apply.resolve``)."""
    file = lora_file(path)
    data, tensors, metadata = _read(file)
    fmt, pieces = convert(file, tensors, metadata)
    return LoraAdapter(path=str(file), fingerprint=hashlib.sha256(data).hexdigest(), format=fmt,
                       pieces=tuple(pieces))


def convert(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
            ) -> tuple[str, list[LoraPiece]]:
    """Detect the format from the keys and convert (see the module docstring)."""
    keys = list(tensors)
    _refuse_unsupported(path, keys)
    if any(k.endswith((".lora_down.weight", ".lora_up.weight")) for k in keys):
        return "kohya", _kohya(path, tensors)
    if any(".processor." in k for k in keys):
        return "xlabs", _xlabs(path, tensors)
    if any(".lora_A." in k or ".lora_B." in k for k in keys):
        return _peft(path, tensors, metadata)
    looks_like_model = any(k.endswith(".weight") and "lora" not in k for k in keys)
    what = "a model checkpoint, not a LoRA" if looks_like_model else "no LoRA weights"
    raise LoraError(path, f"{what}: none of its {len(keys)} tensors is a LoRA layer (lora_A/lora_B, "
                    f"lora_down/lora_up or XLabs processor keys), e.g. {keys[:3]}",
                    "pass a LoRA adapter file (base models go to --model)", NOT_LORA)


def _refuse_unsupported(path: Path, keys: list[str]) -> None:
    has_lora = any("lora" in k for k in keys)  # a model checkpoint has norm scales too: not a Control LoRA
    for mark, what in _UNSUPPORTED_MARKS.items():
        hits = [k for k in keys if mark in k]
        if hits and (has_lora or "Control" not in what):
            raise LoraError(path, f"is {what} (e.g. key {hits[0]!r}), which kontext_core does not apply",
                            "use a plain LoRA (lora_A/lora_B or lora_down/lora_up layers)", UNSUPPORTED)
    text = [k for k in keys if k.startswith(_TEXT_ENCODER)]
    if text:
        raise LoraError(path, f"has {len(text)} text-encoder LoRA tensors (e.g. {text[0]!r}); only the "
                        "transformer is adapted", "use a transformer-only export of this LoRA (kohya: "
                        "--network_train_unet_only)", UNSUPPORTED)


def _unknown_layers(path: Path, names: list[str]) -> LoraError:
    return LoraError(path, f"names {len(names)} layer(s) no FLUX transformer has, e.g. {names[:3]}",
                     _FOR_THIS_MODEL, MISMATCH)


def _piece(path: Path, name: str, target: Target, down: torch.Tensor, up: torch.Tensor, scale: float,
           down_bias: torch.Tensor | None = None, up_bias: torch.Tensor | None = None) -> LoraPiece:
    if down.ndim != 2 or up.ndim != 2:
        raise LoraError(path, f"layer {name!r} has {down.ndim}-D/{up.ndim}-D factors (a convolution LoRA?)",
                        _FOR_THIS_MODEL, UNSUPPORTED)
    if up.shape[1] != down.shape[0]:
        raise LoraError(path, f"layer {name!r}: up is {tuple(up.shape)} but down is {tuple(down.shape)} "
                        "(ranks differ): the file is damaged", "re-export or re-download the LoRA", NOT_LORA)
    if target.swap_halves:  # diffusers [scale; shift] rows -> native [shift; scale]
        up = torch.cat(up.chunk(2, dim=0)[::-1])
        up_bias = None if up_bias is None else torch.cat(up_bias.chunk(2)[::-1])
    return LoraPiece(target.module, target.segments, down, up, float(scale), down_bias, up_bias)


def _strip(name: str, prefixes: tuple[str, ...]) -> tuple[str, str]:
    for prefix in prefixes:
        if name.startswith(prefix):
            return prefix, name[len(prefix):]
    return "", name


def _kohya(path: Path, tensors: Mapping[str, torch.Tensor]) -> list[LoraPiece]:
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, _, part = key.partition(".")
        if part not in ("lora_down.weight", "lora_up.weight", "alpha"):
            name, part = _kohya_dotted(key)
        groups.setdefault(name, {})[part] = value
    pieces, unknown = [], []
    for name, parts in groups.items():
        if "lora_down.weight" not in parts or "lora_up.weight" not in parts:
            raise LoraError(path, f"layer {name!r} lacks its {'lora_up' if 'lora_down.weight' in parts else 'lora_down'}"
                            " weight", "re-export or re-download the LoRA", NOT_LORA)
        prefix, rest = _strip(name, ("lora_unet_", "lora_transformer_", "diffusion_model.", "transformer."))
        target = (diffusers_target(rest, True) if prefix in ("lora_transformer_", "transformer.")
                  else any_target(rest, underscored=True))
        if target is None:
            unknown.append(name)
            continue
        down, up = parts["lora_down.weight"], parts["lora_up.weight"]
        alpha = float(parts["alpha"].float().item()) if "alpha" in parts else float(down.shape[0])
        pieces.append(_piece(path, name, target, down, up, alpha / down.shape[0]))
    if unknown:
        raise _unknown_layers(path, unknown)
    return pieces


def _kohya_dotted(key: str) -> tuple[str, str]:
    """ComfyUI's ``diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight`` -> (name, part)."""
    for part in ("lora_down.weight", "lora_up.weight", "alpha"):
        if key.endswith("." + part):
            return key[: -len(part) - 1], part
    return key, "?"


def _xlabs(path: Path, tensors: Mapping[str, torch.Tensor]) -> list[LoraPiece]:
    groups: dict[tuple[str, str, str], dict[str, torch.Tensor]] = {}
    unknown = []
    for key, value in tensors.items():
        m = _XLABS.match(key)
        if m is None:
            unknown.append(key)
            continue
        groups.setdefault(m.groups()[:3], {})[m.group(4)] = value
    if unknown:
        raise _unknown_layers(path, unknown)
    pieces = []
    for (blocks, index, layer), parts in groups.items():
        name = f"{blocks}.{index}.processor.{layer}"
        if set(parts) != {"down", "up"}:
            raise LoraError(path, f"layer {name!r} lacks its {'up' if 'down' in parts else 'down'} weight",
                            "re-export or re-download the LoRA", NOT_LORA)
        module, segments = _XLABS_TARGETS[(blocks, layer)]
        target = Target(f"{blocks}.{index}.{module}", segments)
        pieces.append(_piece(path, name, target, parts["down"], parts["up"], 1.0))
    return pieces


def _peft(path: Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
          ) -> tuple[str, list[LoraPiece]]:
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        for part in ("lora_A.weight", "lora_B.weight", "lora_A.bias", "lora_B.bias", "alpha"):
            if key.endswith("." + part):
                groups.setdefault(key[: -len(part) - 1], {})[part] = value
                break
        else:
            raise LoraError(path, f"tensor {key!r} is not part of a LoRA layer", "pass a plain LoRA adapter file",
                            UNSUPPORTED)
    config = _peft_config(path, metadata)
    pieces, unknown, formats = [], [], set()
    for name, parts in groups.items():
        if "lora_A.weight" not in parts or "lora_B.weight" not in parts:
            raise LoraError(path, f"layer {name!r} lacks its {'lora_B' if 'lora_A.weight' in parts else 'lora_A'}"
                            " weight", "re-export or re-download the LoRA", NOT_LORA)
        prefix, rest = _strip(name, ("base_model.model.", "diffusion_model.", "transformer."))
        target = any_target(rest)
        if target is None:
            unknown.append(name)
            continue
        formats.add("diffusers" if diffusers_target(rest) else "native")
        down, up = parts["lora_A.weight"], parts["lora_B.weight"]
        scale = _peft_scale(rest, down.shape[0], parts.get("alpha"), config)
        pieces.append(_piece(path, name, target, down, up, scale, parts.get("lora_A.bias"), parts.get("lora_B.bias")))
    if unknown:
        raise _unknown_layers(path, unknown)
    return ("diffusers" if formats == {"diffusers"} else "native" if formats == {"native"} else "mixed"), pieces


def _peft_config(path: Path, metadata: Mapping[str, str]) -> dict:
    """The transformer's PEFT LoraConfig from diffusers' ``lora_adapter_metadata``, or {}."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        packed = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LoraError(path, f"its lora_adapter_metadata is not JSON ({e})", "re-export the LoRA", NOT_LORA) from e
    config = {k.removeprefix("transformer."): v for k, v in packed.items() if not k.startswith("text_encoder")}
    if config.get("use_dora"):
        raise LoraError(path, "is a DoRA adapter (use_dora in its config), which kontext_core does not apply",
                        "use a plain LoRA", UNSUPPORTED)
    return config


def _pattern_value(name: str, patterns: Mapping[str, float]) -> float | None:
    """PEFT's rule: a pattern key matches a module whose name is the key or ends with ``.key``."""
    for key, value in patterns.items():
        regex = key[1:] if key.startswith("^") else rf"(.*\.)?{key}"
        if re.fullmatch(regex, name):
            return float(value)
    return None


def _peft_scale(name: str, rank: int, alpha_tensor: torch.Tensor | None, config: Mapping) -> float:
    if config:
        alpha = _pattern_value(name, config.get("alpha_pattern") or {})
        alpha = float(config.get("lora_alpha", rank)) if alpha is None else alpha
        return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    if alpha_tensor is not None:  # diffusers' "network alphas"
        return float(alpha_tensor.float().item()) / rank
    return 1.0
