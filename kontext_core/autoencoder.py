"""The FLUX autoencoder, with BFL's module names. Encode returns the posterior mean.

Memory format: on the CPU, encode and decode run channels_last (oneDNN's convolutions and a ×2
nearest upsample are several times faster in NHWC; diffusers' decoder ends up there after its
mid-block attention). Outputs agree with the contiguous layout to float rounding (≤ 1e-5).
Without autograd, SiLU and residual adds work in place on temporaries (no extra copies).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import AutoencoderConfig

# Per device type; others keep the contiguous layout. CUDA is unmeasured so far (no GPU run yet).
_MEMORY_FORMATS = {"cpu": torch.channels_last}


def memory_format_for(device: torch.device | str) -> torch.memory_format:
    """The activation layout encode/decode use on ``device``: channels_last on the CPU."""
    return _MEMORY_FORMATS.get(torch.device(device).type, torch.contiguous_format)


def _norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU of a temporary (a norm's output): in place unless autograd needs the input."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


def _residual(skip: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """skip + h, written into h (a temporary) when no gradient is needed."""
    return h.add_(skip) if not torch.is_grad_enabled() else skip + h


def _format_of(x: torch.Tensor) -> torch.memory_format:
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions, with 1×1 convolutions (mid block only)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = _norm(groups, channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        # [B, C, H, W] -> [B, 1, HW, C]: a view when channels_last, a copy when contiguous.
        q, k, v = (m(hn).permute(0, 2, 3, 1).reshape(b, 1, h * w, c) for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).reshape(b, h, w, c).permute(0, 3, 1, 2)
        return _residual(x, self.proj_out(out.contiguous(memory_format=_format_of(x))))


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = _norm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = _norm(groups, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_silu(self.norm1(x)))
        h = self.conv2(_silu(self.norm2(h)))
        skip = self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x
        return _residual(skip, h)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class _Level(nn.Module):
    """One resolution level: a list of resnet blocks and an optional resampler."""

    def __init__(self, blocks: list[nn.Module], resample_name: str | None, resample: nn.Module | None):
        super().__init__()
        self.block = nn.ModuleList(blocks)
        self.attn = nn.ModuleList()  # no attention in the FLUX AE levels; kept for key parity
        if resample_name:
            self.add_module(resample_name, resample)


class Encoder(nn.Module):
    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        g = c.norm_groups
        self.conv_in = nn.Conv2d(c.in_channels, c.ch, kernel_size=3, stride=1, padding=1)
        in_mult = (1, *c.ch_mult)
        self.down = nn.ModuleList()
        block_in = c.ch
        for level, mult in enumerate(c.ch_mult):
            block_in, block_out = c.ch * in_mult[level], c.ch * mult
            blocks = []
            for _ in range(c.num_res_blocks):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            last = level == len(c.ch_mult) - 1
            self.down.append(_Level(blocks, None if last else "downsample", None if last else Downsample(block_in)))
        self.mid = _MidBlock(block_in, g)
        self.norm_out = _norm(g, block_in)
        self.conv_out = nn.Conv2d(block_in, 2 * c.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            for block in level.block:
                h = block(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.mid(h)
        return self.conv_out(_silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, c: AutoencoderConfig):
        super().__init__()
        g = c.norm_groups
        block_in = c.ch * c.ch_mult[-1]
        self.conv_in = nn.Conv2d(c.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = _MidBlock(block_in, g)
        levels: list[nn.Module] = []
        for level in reversed(range(len(c.ch_mult))):
            block_out = c.ch * c.ch_mult[level]
            blocks = []
            for _ in range(c.num_res_blocks + 1):
                blocks.append(ResnetBlock(block_in, block_out, g))
                block_in = block_out
            levels.insert(0, _Level(blocks, "upsample" if level else None, Upsample(block_in) if level else None))
        self.up = nn.ModuleList(levels)  # index = resolution level; run from the last to 0
        self.norm_out = _norm(g, block_in)
        self.conv_out = nn.Conv2d(block_in, c.out_ch, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        h = h.to(self.up[-1].block[0].conv1.weight.dtype)
        for level in reversed(self.up):
            for block in level.block:
                h = block(h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(_silu(self.norm_out(h)))


class AutoEncoder(nn.Module):
    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] [B, 3, H, W] -> normalised latents (posterior mean, no sampling), contiguous."""
        mean = self.encoder(x.contiguous(memory_format=memory_format_for(x.device)))[:, : self.config.z_channels]
        return (self.config.scale_factor * (mean - self.config.shift_factor)).contiguous()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> pixels [B, 3, H, W] (channels_last on the CPU: same values)."""
        z = (z / self.config.scale_factor + self.config.shift_factor).contiguous(memory_format=memory_format_for(z.device))
        return self.decoder(z)
