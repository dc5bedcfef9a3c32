"""The fp8 storage plan casts the transformer on the host before it moves to the device, so
the device never holds the bf16 weights (on a 24 GB card the bf16 transformer alone would not
fit). The "device" here is PyTorch's meta device, which any host can stand in for."""

from __future__ import annotations

import pytest
import torch

import kontext_core.quant.load as qload
from kontext_core.quant.layers import CastLinear


@pytest.fixture
def seen(monkeypatch) -> list[torch.device]:
    """The devices load_with_plan loads the components onto."""
    devices: list[torch.device] = []
    real = qload.load_components

    def recording(source, device, dtype, text=True):
        devices.append(torch.device(device))
        return real(source, device, dtype, text=text)

    monkeypatch.setattr(qload, "load_components", recording)
    return devices


def test_fp8_plan_loads_on_the_host_then_moves_cast_weights(seen) -> None:
    editor = qload.load_with_plan("tiny-random", device="meta", dtype=torch.float32, plan="fp8",
                                  text=False)
    assert seen == [torch.device("cpu")]  # loaded where the cast happens, not on the device
    cast = [m for m in editor.transformer.modules() if isinstance(m, CastLinear)]
    assert cast and all(m.weight.dtype == torch.float8_e4m3fn for m in cast)
    assert all(t.device.type == "meta" for t in editor.transformer.state_dict().values())
    assert all(t.device.type == "meta" for t in editor.autoencoder.state_dict().values())


def test_a_resident_bf16_plan_loads_straight_onto_the_device(seen) -> None:
    qload.load_with_plan("tiny-random", device="meta", dtype=torch.float32, plan="resident",
                         text=False)
    assert seen == [torch.device("meta")]
