"""Moving weights to the device only while they run (forward hooks; the model code is unchanged).

- :class:`ModelOffload`: named components; calling one moves it (and its tensor inputs) to the
  device and the previously active one back to host memory.
- :class:`BlockStream`: a list of blocks kept in host memory (pinned on CUDA); each block's
  weights are copied in on a side CUDA stream one block ahead and dropped after it ran.

On the CPU both run their logic with no copies (host and device are the same), so tests can see
what would move; the counters say what did.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _to(value, device: torch.device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # a NamedTuple takes its fields apart
        return type(value)(*(_to(v, device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    if isinstance(value, dict):
        return {k: _to(v, device) for k, v in value.items()}
    return value


class ModelOffload:
    def __init__(self, components: dict[str, nn.Module], device: torch.device, home: torch.device | None = None):
        self.components, self.device = components, device
        self.home = home or torch.device("cpu")
        self.active: str | None = None
        self.activations: list[str] = []  # component names, in the order they were moved in
        for name, module in components.items():
            module.to(self.home)
            module.register_forward_pre_hook(self._hook(name), with_kwargs=True)

    def _hook(self, name: str):
        def hook(module: nn.Module, args, kwargs):
            self.activate(name)
            # callers may have read the (offloaded) module's device for their inputs
            return _to(args, self.device), _to(kwargs, self.device)
        return hook

    def activate(self, name: str) -> None:
        if self.active == name:
            return
        if self.active is not None:
            self.components[self.active].to(self.home)
        self.components[name].to(self.device)
        self.active = name
        self.activations.append(name)


def _tensors(module: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    out = []
    for owner in module.modules():
        for name, t in list(owner._parameters.items()) + list(owner._buffers.items()):
            if t is not None:
                out.append((owner, name, t))
    return out


def _put(owner: nn.Module, name: str, tensor: torch.Tensor) -> None:
    if name in owner._parameters:
        owner._parameters[name].data = tensor
    else:
        owner._buffers[name] = tensor


class BlockStream:
    def __init__(self, blocks: Sequence[nn.Module], device: torch.device):
        self.blocks, self.device = list(blocks), device
        self.cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.pending: dict[int, tuple[list[torch.Tensor], torch.cuda.Event | None]] = {}
        self.loads = 0  # block weight loads (one per block run)
        self.home: list[list[tuple[nn.Module, str, torch.Tensor]]] = []
        for i, block in enumerate(self.blocks):
            entries = []
            for owner, name, t in _tensors(block):
                t = t.detach().to("cpu")
                entries.append((owner, name, t.pin_memory() if self.cuda else t))
            self.home.append(entries)
            for owner, name, t in entries:
                _put(owner, name, t)
            block.register_forward_pre_hook(self._before(i))
            block.register_forward_hook(self._after(i))

    def _copy(self, i: int) -> None:
        if i in self.pending:
            return
        if not self.cuda:
            self.pending[i] = ([t for _, _, t in self.home[i]], None)
            return
        with torch.cuda.stream(self.stream):
            copies = [t.to(self.device, non_blocking=True) for _, _, t in self.home[i]]
            event = torch.cuda.Event()
            event.record(self.stream)
        self.pending[i] = (copies, event)

    def _before(self, i: int):
        def hook(module: nn.Module, args) -> None:
            self._copy(i)
            copies, event = self.pending.pop(i)
            if event is not None:
                current = torch.cuda.current_stream(self.device)
                current.wait_event(event)
                for t in copies:  # the side stream's memory is in use on this stream now
                    t.record_stream(current)
            for (owner, name, _), t in zip(self.home[i], copies, strict=True):
                _put(owner, name, t)
            self.loads += 1
            self._copy((i + 1) % len(self.blocks))  # the next block, while this one computes
        return hook

    def _after(self, i: int):
        def hook(module: nn.Module, args, output) -> None:
            for owner, name, t in self.home[i]:
                _put(owner, name, t)
        return hook
