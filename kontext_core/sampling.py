"""Flow-matching sampling for Kontext: latents packing, position ids, schedule, noise, Euler loop."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .config import SamplerDefaults


def pack(latents: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, (h/2)(w/2), 4C]; feature index c·4 + ph·2 + pw, row-major tokens."""
    b, c, h, w = latents.shape
    x = latents.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`pack` for a latent grid of h×w cells."""
    b, _, f = tokens.shape
    x = tokens.view(b, h // 2, w // 2, f // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, f // 4, h, w)


def image_ids(rows: int, cols: int, axis0: float = 0.0, device=None,
              stride: tuple[float, float] = (1.0, 1.0)) -> torch.Tensor:
    """Position ids [1, rows·cols, 3]: (axis0, row·stride_r, col·stride_c), row-major.

    A stride above 1 lays a reduced context on the positions its full-size grid would have had,
    so each context token still lines up with the output tokens it shows."""
    r = torch.arange(rows, dtype=torch.float32, device=device) * stride[0]
    c = torch.arange(cols, dtype=torch.float32, device=device) * stride[1]
    ids = torch.stack(
        (torch.full((rows, cols), axis0, device=device), r[:, None].expand(rows, cols), c[None, :].expand(rows, cols)),
        dim=-1,
    )
    return ids.reshape(1, rows * cols, 3)


def time_shift(mu: float, t: torch.Tensor) -> torch.Tensor:
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1))


def schedule(steps: int, target_tokens: int, sampler: SamplerDefaults | None = None) -> list[float]:
    """steps+1 times from 1 to 0, shifted by mu linear in the TARGET token count (not context)."""
    sampler = sampler or SamplerDefaults()
    slope = (sampler.max_shift - sampler.base_shift) / (sampler.max_seq_len - sampler.base_seq_len)
    mu = slope * target_tokens + (sampler.base_shift - slope * sampler.base_seq_len)
    t = torch.linspace(1, 0, steps + 1, dtype=torch.float32)
    return time_shift(mu, t).tolist()


def noise_for_seed(seed: int, channels: int, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
    """One row's starting noise [1, C, h, w], drawn on the CPU from its own seeded generator.

    A row's noise therefore never depends on what it is batched with or on the device.
    """
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn(1, channels, h, w, dtype=dtype, generator=generator)


def denoise(
    model: Callable[..., torch.Tensor],
    img: torch.Tensor,
    img_ids: torch.Tensor,
    context: torch.Tensor,
    context_ids: torch.Tensor,
    txt: torch.Tensor,
    txt_ids: torch.Tensor,
    y: torch.Tensor,
    times: list[float],
    guidance: float,
    progress: Callable[[int, int], None] | None = None,
    step_cache=None,
) -> torch.Tensor:
    """Euler steps over ``times``; context tokens are appended after the target tokens each step
    and only the target predictions are kept. The update is computed in float32.
    ``step_cache``: an optional FirstBlockCache (approximation; see kontext_core.step_cache)."""
    b, n_target = img.shape[0], img.shape[1]
    guidance_vec = torch.full((b,), guidance, device=img.device, dtype=img.dtype)
    all_ids = torch.cat((img_ids, context_ids), dim=1)
    pe = model.rope(torch.cat((txt_ids, all_ids), dim=1)) if hasattr(model, "rope") else None
    for i, (t_curr, t_next) in enumerate(zip(times[:-1], times[1:], strict=True)):
        t_vec = torch.full((b,), t_curr, dtype=img.dtype, device=img.device)
        pred = model(
            img=torch.cat((img, context), dim=1),
            img_ids=all_ids,
            txt=txt,
            txt_ids=txt_ids,
            y=y,
            timesteps=t_vec,
            guidance=guidance_vec,
            pe=pe,
            **({"step_cache": step_cache} if step_cache is not None else {}),
        )[:, :n_target]
        img = (img.float() + (t_next - t_curr) * pred.float()).to(img.dtype)
        if progress is not None:
            progress(i + 1, len(times) - 1)
    return img
