"""kontext_core: FLUX.1 Kontext in PyTorch, as a plain library (no Ray, no manifests).

    editor = KontextEditor.load("kontext-tiny")           # or a folder of downloaded weights
    out = editor.edit([image], ["make the background red"], [0])
    out.images[0].save("edited.png")
"""

from .config import Preset, available_presets, load_preset
from .editor import DEFAULT_MODEL, NUMERICS_VERSION, EditError, EditOutput, KontextEditor
from .fingerprint import model_fingerprint
from .loading import CheckpointError, ModelNotFoundError, resolve_model

__all__ = [
    "DEFAULT_MODEL",
    "NUMERICS_VERSION",
    "CheckpointError",
    "EditError",
    "EditOutput",
    "KontextEditor",
    "ModelNotFoundError",
    "Preset",
    "available_presets",
    "load_preset",
    "model_fingerprint",
    "resolve_model",
]
