"""Rules for single manifest values, shared by the validator and the builder.

Every check takes one non-null Python value and returns ``(normalised_value, None)`` when the
value is fine or ``(None, reason)`` when it is not. Nulls are the caller's business: they are
fine in optional columns and a problem in required ones.
"""

from __future__ import annotations

import math

from . import limits

SEED_LIMIT = 2**63  # seeds are stored as int64
SIDE_MULTIPLE = 16  # the autoencoder (8x) and 2x2 patching need sides divisible by 16
MAX_SIDE = 4096

INSTRUCTION_EXAMPLE = "e.g. 'replace the background with studio white'"

Checked = tuple[object, None] | tuple[None, str]


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_seed(value: object) -> Checked:
    # Floats are refused even when integral: a float column has already lost precision
    # above 2**53, so "3.0" usually means the seed column was built wrongly.
    if not is_int(value):
        return None, f"seed must be an integer (got {value!r})"
    if value < 0:
        return None, f"seed must be ≥ 0 (got {value})"
    if value >= SEED_LIMIT:
        return None, f"seed must be < 2**63 (got {value})"
    return value, None


def check_instruction(value: object) -> Checked:
    if not isinstance(value, str):
        return None, f"instruction must be text (got {value!r})"
    text = value.strip()
    if not text:
        return None, (
            "instruction is empty or only whitespace; write the edit to make, "
            f"{INSTRUCTION_EXAMPLE}"
        )
    return text, None


def _as_int(name: str, value: object) -> Checked:
    # Integral floats are accepted here (not for seeds): pandas turns an integer column with
    # gaps into float64, so optional size/steps columns often arrive as 512.0.
    if is_int(value):
        return value, None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value), None
    return None, f"{name} must be an integer (got {value!r})"


def check_side(name: str, value: object) -> Checked:
    """width / height: positive, a multiple of 16, at most 4096."""
    side, reason = _as_int(name, value)
    if reason:
        return None, reason
    if side <= 0 or side % SIDE_MULTIPLE or side > MAX_SIDE:
        return None, (
            f"{name} must be a positive multiple of {SIDE_MULTIPLE} and at most {MAX_SIDE} "
            f"(got {side}); leave it null to keep the model's size policy"
        )
    return side, None


def check_steps(value: object) -> Checked:
    steps, reason = _as_int("steps", value)
    if reason:
        return None, reason
    if not limits.steps_in_range(steps):
        return None, f"steps must be {limits.range_text(limits.MIN_STEPS, limits.MAX_STEPS)} (got {steps})"
    return steps, None


def check_guidance(value: object) -> Checked:
    if not (is_int(value) or isinstance(value, float)) or not math.isfinite(value):
        return None, f"guidance must be a finite number (got {value!r})"
    if not limits.guidance_in_range(value):
        return None, (f"guidance must be {limits.range_text(limits.MIN_GUIDANCE, limits.MAX_GUIDANCE)} "
                      f"(got {value})")
    return float(value), None


def check_output_format(value: object) -> Checked:
    name = limits.format_name(value) if isinstance(value, str) else None
    if name is not None:
        return name, None
    aliases = ", ".join(limits.FORMAT_ALIASES)
    return None, f"output_format must be one of {', '.join(limits.OUTPUT_FORMATS)} or {aliases} (got {value!r})"


def check_label(name: str, value: object) -> Checked:
    """row_id / product_id / variant: text; integers are taken as their decimal text."""
    if is_int(value):
        value = str(value)
    if not isinstance(value, str):
        return None, f"{name} must be text (got {value!r})"
    if not value.strip():
        return None, f"{name} is empty; give a non-empty value or leave it null"
    return value, None


LORA_SEPARATOR = ";"


def check_lora(value: object) -> Checked:
    """lora: a list of ``path[:scale]`` strings, or one string of them separated by ';'. Each
    spec is stripped; an empty list or string means no adapters for this row. The files and
    scales are the pipeline's to check (the run's model decides what fits)."""
    if isinstance(value, str):
        value = value.split(LORA_SEPARATOR)
        value = [] if all(not part.strip() for part in value) else value
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return None, (f"lora must be a list of path[:scale] strings or one string of them "
                      f"separated by '{LORA_SEPARATOR}' (got {value!r})")
    specs = tuple(v.strip() for v in value)
    if any(not spec for spec in specs):
        return None, (f"lora {list(value)!r} holds an empty adapter; give each as path[:scale], "
                      "e.g. loras/style.safetensors:0.8, or leave the cell null for the run's adapters")
    return specs, None


# A chained row edits another row's output: its image is ``row:<row_id>`` of that row.
CHAIN_PREFIX = "row:"


def chain_parent(value: object) -> str | None:
    """The parent row id named by an image value ``row:<row_id>``; None for other values."""
    if isinstance(value, str) and value.startswith(CHAIN_PREFIX):
        return value[len(CHAIN_PREFIX):]
    return None


def check_chain_ref(value: str) -> Checked:
    """``row:<row_id>``: the row id must be non-empty (it is matched exactly, as written)."""
    parent = chain_parent(value)
    if parent is None or not parent.strip():
        return None, (f"image {value!r} names no row; write row:<row_id> with the row_id of "
                      "the row whose output this row edits")
    return value, None
