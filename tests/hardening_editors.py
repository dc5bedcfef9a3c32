"""Test doubles for the model actor (shipped to Ray workers by value)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image


@dataclass
class EchoOutput:
    images: list[Image.Image]
    timings: dict[str, float] = field(default_factory=dict)
    truncated: list[bool] = field(default_factory=list)


class EchoEditor:
    """Returns each source image exactly as the actor decoded it (no resize): the stored
    output then shows what the model would have been given."""

    # No ``fingerprint``: a double stands in for the driver's model, so the actor's check that
    # its weights are the driver's (pipeline.actors.check_same_model) does not apply.

    def edit(self, images: list[Image.Image], instructions: list[str], seeds: list[int],
             **_: Any) -> EchoOutput:
        return EchoOutput([im.copy() for im in images], {}, [False] * len(images))


def echo_factory(model: str, device: str, dtype: Any) -> EchoEditor:
    return EchoEditor()
