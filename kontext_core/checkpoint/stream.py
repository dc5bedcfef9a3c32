"""Fill a module built on the meta device from checkpoint files, one parameter at a time.

Every key and shape is checked against the file headers first (no tensor data read), so a wrong
checkpoint fails before any loading. Then each native parameter is read (for diffusers files: its
pieces, one at a time), converted to the target dtype on the target device and assigned in place of
the meta tensor: host memory never holds more than one parameter's pieces.
"""

from __future__ import annotations

import torch
from torch import nn
from tqdm import tqdm

from .errors import CheckpointError
from .layout import ComponentWeights
from .tables import Op, Rule


def identity_rules(module: nn.Module) -> list[Rule]:
    """Rules for a checkpoint already in native (BFL) key names."""
    return [Rule(key, (key,)) for key in module.state_dict()]


def check_plan(module: nn.Module, weights: ComponentWeights, rules: list[Rule], summary: str) -> None:
    """All keys present with the expected shapes, nothing left over; errors name file, key, shapes."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    ruled = {r.native for r in rules}
    if ruled != set(expected):
        missing = sorted(set(expected) - ruled)
        raise CheckpointError(f"internal: no conversion rule for {weights.component} parameter(s) {missing[:3]}")
    infos = weights.tensors.infos
    used = set()
    for rule in rules:
        for key, want in zip(rule.diffusers, rule.diffusers_shapes(expected[rule.native]), strict=True):
            info = infos.get(key)
            if info is None:
                raise CheckpointError(
                    f"{weights.tensors.describe()}: key {key!r} is missing (needed for {rule.native!r} of a "
                    f"{weights.component} with {summary}): the checkpoint is incomplete or of another model"
                )
            if info.shape != want:
                raise CheckpointError(
                    f"{info.file}: key {key!r} has shape {info.shape}, expected {want} "
                    f"(a {weights.component} with {summary})"
                )
            used.add(key)
    extra = sorted(set(infos) - used)
    if extra:
        raise CheckpointError(
            f"{weights.tensors.describe()}: {len(extra)} unexpected key(s), e.g. {extra[:3]}: the checkpoint does "
            f"not match a {weights.component} with {summary}"
        )


def _assign(module: nn.Module, key: str, tensor: torch.Tensor) -> None:
    owner_name, _, name = key.rpartition(".")
    owner = module.get_submodule(owner_name)
    if name in owner._parameters:
        old = owner._parameters[name]
        owner._parameters[name] = nn.Parameter(tensor, requires_grad=old.requires_grad)
    else:
        owner._buffers[name] = tensor


def fill_module(module: nn.Module, weights: ComponentWeights, rules: list[Rule], device: torch.device,
                dtype: torch.dtype, summary: str) -> nn.Module:
    """Load ``weights`` into ``module`` (built under ``torch.device("meta")``) and return it."""
    check_plan(module, weights, rules, summary)
    shapes = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    with weights.tensors.open() as read, torch.no_grad():
        for rule in tqdm(rules, desc=f"loading {weights.component}", unit="tensor", disable=None, leave=False):
            if rule.op is Op.COPY:
                tensor = read(rule.diffusers[0]).to(device=device, dtype=dtype)
            else:
                tensor = torch.empty(shapes[rule.native], device=device, dtype=dtype)
                rule.fill_native(tensor, read)
            _assign(module, rule.native, tensor)
    leftover = [k for k, v in module.state_dict().items() if v.is_meta]
    if leftover:
        raise CheckpointError(f"internal: {weights.component} parameters not loaded: {leftover[:3]}")
    return module
