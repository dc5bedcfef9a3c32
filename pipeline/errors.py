"""Error classes of a batch run and how an exception maps onto them.

Each class gets one behaviour (the data flow that applies them: docs/architecture.md):

- ``bad-row``          the row's own input is wrong: it fails alone, is never retried.
- ``transient``        may succeed on another try: retried with backoff up to a bound;
                       CUDA out-of-memory retries with a smaller batch.
- ``poisoned-device``  the device (CUDA context) is unusable: the actor exits with
                       ``os._exit`` so Ray restarts it, its rows are retried elsewhere.
- ``config``           the run cannot start (unknown model, missing weights, bad flag):
                       stop before any work with exit code 2 and the fix in the message.
"""

from __future__ import annotations

BAD_ROW = "bad-row"
TRANSIENT = "transient"
POISONED_DEVICE = "poisoned-device"
CONFIG = "config"
BUDGET = "budget"

ERROR_CLASSES = (BAD_ROW, TRANSIENT, POISONED_DEVICE, CONFIG, BUDGET)

# Substrings of CUDA errors after which the CUDA context is unusable for the rest of the
# process lifetime: only a fresh process recovers.
_STICKY_CUDA_ERRORS = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "misaligned address",
    "illegal instruction",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
    "uncorrectable ecc error",
    "an illegal memory access",
    "cuda error: launch failure",
)


class PipelineError(Exception):
    """Base of the errors this package raises on purpose; ``error_class`` says what to do."""

    error_class: str = TRANSIENT


class ConfigError(PipelineError):
    """The run cannot start; the message names the thing, the reason and the fix."""

    error_class = CONFIG


class RunFolderFull(PipelineError):
    """The run folder (ledger, results) is out of space: the run stops where it is and the same
    command resumes it later (exit code 1, like a full output store)."""

    error_class = TRANSIENT


class BadRowError(PipelineError):
    """One row's input is unusable (missing/corrupt image, empty instruction, ...)."""

    error_class = BAD_ROW


class TransientError(PipelineError):
    """A failure that may not happen again (I/O hiccup, lost node, out of memory)."""

    error_class = TRANSIENT


class PoisonedDeviceError(PipelineError):
    """The device is in a sticky error state; the process holding it must exit."""

    error_class = POISONED_DEVICE


def is_cuda_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory (retry later at a smaller batch)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return "cuda out of memory" in str(exc).lower()


def is_sticky_cuda_error(exc: BaseException) -> bool:
    """True when the exception leaves the CUDA context unusable (poisoned device)."""
    if isinstance(exc, PoisonedDeviceError):
        return True
    text = str(exc).lower()
    return any(s in text for s in _STICKY_CUDA_ERRORS)


def classify_exception(exc: BaseException) -> str:
    """Map an exception raised while editing a batch to an error class."""
    if isinstance(exc, PipelineError):
        return exc.error_class
    if is_sticky_cuda_error(exc):
        return POISONED_DEVICE
    if is_cuda_oom(exc):
        return TRANSIENT
    # kontext_core.EditError is about the request (bad size, unreadable input): a row problem.
    if type(exc).__name__ == "EditError":
        return BAD_ROW
    return TRANSIENT


def describe(exc: BaseException) -> str:
    """One-line 'Type: message' for ledgers and results (no traceback)."""
    text = " ".join(str(exc).split())
    if len(text) > 500:
        text = text[:497] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
