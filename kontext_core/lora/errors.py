"""The one error a LoRA adapter can raise: it names the file, the reason and the fix."""

from __future__ import annotations

# Kinds, so a caller can decide how to report: every kind is a whole-run error when the adapter
# is named by the run, a row failure (bad-row) when only a row names it.
MISSING = "missing"  # no such file
NOT_LORA = "not-lora"  # readable, but not a LoRA adapter (a model checkpoint, a text file, ...)
UNSUPPORTED = "unsupported"  # a LoRA variant we do not apply (DoRA, LoKr, text-encoder LoRA, ...)
MISMATCH = "mismatch"  # a LoRA for another model: unknown layer or wrong shape
BAD_SCALE = "bad-scale"  # the scale is not a finite number
BAD_MODE = "bad-mode"  # fused mode asked for on layers that cannot be fused


class LoraError(ValueError):
    """A LoRA adapter that cannot be used. ``str(e)`` reads "LoRA <path>: <reason>. Fix: <fix>"."""

    def __init__(self, path: object, reason: str, fix: str, kind: str):
        self.path, self.reason, self.fix, self.kind = str(path), reason, fix, kind
        super().__init__(f"LoRA {self.path}: {reason}. Fix: {fix}")
