"""Where a model's files are: diffusers folders, BFL single files, Hugging Face cache snapshots.

Each weight component (transformer, autoencoder) is found on its own, so a folder may hold the
diffusers layout (``transformer/``, ``vae/``), BFL files (``flux1-kontext-dev.safetensors``,
``ae.safetensors``) or both (the Kontext HF repo does; diffusers folders win). Text encoders are
always the diffusers-style ``text_encoder/``, ``tokenizer/``, ``text_encoder_2/``, ``tokenizer_2/``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ModelNotFoundError
from .safetensors_io import TensorSource, read_header

BFL_TRANSFORMER_NAMES = ("flux1-kontext-dev.safetensors", "transformer.safetensors")
BFL_AE_NAME = "ae.safetensors"
BFL_PREFIXES = ("model.diffusion_model.",)  # stripped from BFL transformer keys (ComfyUI style)
DIFFUSERS_WEIGHTS = "diffusion_pytorch_model.safetensors"
TEXT_FOLDERS = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
SIDECAR = "kontext.json"
KONTEXT_REPO = "black-forest-labs/FLUX.1-Kontext-dev"

WHERE_TO_PUT_FILES = (
    "Nothing is downloaded at run time. Put the weights in a folder and pass that folder: either the "
    "diffusers layout of black-forest-labs/FLUX.1-Kontext-dev (model_index.json, transformer/, vae/, "
    "text_encoder/, tokenizer/, text_encoder_2/, tokenizer_2/, scheduler/) or the BFL single files "
    "flux1-kontext-dev.safetensors + ae.safetensors with the text_encoder/, tokenizer/, text_encoder_2/, "
    "tokenizer_2/ folders beside them. A Hugging Face repo id (e.g. black-forest-labs/FLUX.1-Kontext-dev) "
    "is looked up in the local HF cache ($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub): "
    "fill it beforehand with `huggingface-cli download <repo>` on a machine with network access."
)


@dataclass(frozen=True)
class ComponentWeights:
    """One component's weights: their format, tensors and (diffusers) config file."""

    component: str  # "transformer" | "autoencoder"
    format: str  # "bfl" | "diffusers"
    tensors: TensorSource
    config_file: Path | None = None

    def config(self) -> dict[str, Any]:
        return read_json(self.config_file) if self.config_file else {}

    def files(self) -> list[Path]:
        return ([self.config_file] if self.config_file else []) + self.tensors.all_files()


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _diffusers_component(folder: Path, component: str) -> ComponentWeights | None:
    """``folder/config.json`` + a safetensors file or index; None if the folder is not there."""
    config = folder / "config.json"
    if not config.is_file():
        return None
    index = folder / (DIFFUSERS_WEIGHTS + ".index.json")
    single = folder / DIFFUSERS_WEIGHTS
    if index.is_file():
        return ComponentWeights(component, "diffusers", TensorSource(index=index), config)
    if single.is_file():
        return ComponentWeights(component, "diffusers", TensorSource([single]), config)
    others = sorted(p.name for p in folder.iterdir() if p.name != "config.json")
    raise CheckpointError(
        f"{folder}: has config.json but no {DIFFUSERS_WEIGHTS} or {DIFFUSERS_WEIGHTS}.index.json "
        f"(found: {', '.join(others) or 'nothing'}); only safetensors weights are loaded"
    )


def _bfl_prefix(path: Path, keys: list[str]) -> str:
    for prefix in BFL_PREFIXES:
        if any(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def _looks_like_bfl_transformer(path: Path) -> bool:
    keys = list(read_header(path))
    prefix = _bfl_prefix(path, keys)
    return f"{prefix}img_in.weight" in keys


def bfl_transformer_file(path: Path) -> ComponentWeights:
    keys = list(read_header(path))
    return ComponentWeights("transformer", "bfl", TensorSource([path], prefix=_bfl_prefix(path, keys)))


def find_transformer(root: Path, file: Path | None = None) -> ComponentWeights:
    if file is not None:
        return bfl_transformer_file(file)
    found = _diffusers_component(root / "transformer", "transformer")
    if found:
        return found
    for name in BFL_TRANSFORMER_NAMES:
        if (root / name).is_file():
            return bfl_transformer_file(root / name)
    candidates = [p for p in sorted(root.glob("*.safetensors")) if p.name != BFL_AE_NAME and _looks_like_bfl_transformer(p)]
    if len(candidates) == 1:
        return bfl_transformer_file(candidates[0])
    if len(candidates) > 1:
        raise ModelNotFoundError(f"{root}: several transformer files ({', '.join(p.name for p in candidates)}): "
                                 "pass the one to use as the model path")
    raise ModelNotFoundError(f"{root}: no transformer weights (transformer/ folder or flux1-kontext-dev.safetensors). "
                             + WHERE_TO_PUT_FILES)


def find_autoencoder(root: Path) -> ComponentWeights:
    found = _diffusers_component(root / "vae", "autoencoder")
    if found:
        return found
    if (root / BFL_AE_NAME).is_file():
        return ComponentWeights("autoencoder", "bfl", TensorSource([root / BFL_AE_NAME]))
    raise ModelNotFoundError(f"{root}: no autoencoder weights (vae/ folder or {BFL_AE_NAME}). " + WHERE_TO_PUT_FILES)


def check_text_folders(root: Path) -> None:
    missing = [d for d in TEXT_FOLDERS if not (root / d).is_dir()]
    if missing:
        raise ModelNotFoundError(
            f"{root}: text encoder folder(s) {', '.join(missing)} missing. Put the CLIP-L (text_encoder/, "
            "tokenizer/) and T5-XXL (text_encoder_2/, tokenizer_2/) folders of the FLUX.1-Kontext-dev download "
            "there, beside the transformer and autoencoder weights."
        )


def folder_files(folder: Path) -> list[Path]:
    """Every regular file under ``folder`` (sorted), skipping hidden ones."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not any(s.startswith(".") for s in
                                                                            p.relative_to(folder).parts))


# --- Hugging Face cache ------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def looks_like_repo_id(spec: str) -> bool:
    return bool(_REPO_ID.match(spec)) and not spec.startswith((".", "/"))


def hf_hub_cache() -> Path:
    """The hub cache folder, from the environment at call time (like huggingface_hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser()
    return cache / "huggingface" / "hub"


def find_hf_snapshot(spec: str) -> Path:
    """``owner/name[@revision]`` -> its snapshot folder in the local HF cache, without network."""
    repo, _, revision = spec.partition("@")
    revision = revision or "main"
    repo_dir = hf_hub_cache() / f"models--{repo.replace('/', '--')}"
    ref = repo_dir / "refs" / revision
    snapshots = repo_dir / "snapshots"
    if ref.is_file():
        commit = ref.read_text().strip()
        reason = f"refs/{revision} points to {commit} but snapshots/{commit} is missing"
    elif (snapshots / revision).is_dir():
        commit, reason = revision, ""
    else:
        existing = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
        commit = existing[0] if len(existing) == 1 and revision == "main" else ""
        reason = f"no {repo_dir / 'refs' / revision}" + (f" (snapshots: {', '.join(existing)})" if existing else "")
    if commit and (snapshots / commit).is_dir():
        return snapshots / commit
    raise ModelNotFoundError(
        f"model {spec!r} is not on disk: looked for the Hugging Face cache snapshot "
        f"{snapshots}/<revision> via {repo_dir / 'refs' / revision} ({reason or 'not found'}). "
        + WHERE_TO_PUT_FILES
    )
