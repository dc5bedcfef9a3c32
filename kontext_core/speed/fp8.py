"""fp8 row-wise linears (a fast-path approximation: opt-in per job, part of the cache key).

Weights are quantized once per output row to ``float8_e4m3fn`` with a float32 scale per row;
activations are quantized per token at run time (dynamic, amax of the token's features). The
matmul is ``torch._scaled_mm`` with row-wise scales (scale_a [M, 1], scale_b [1, N], both float32),
which needs CUDA compute capability 8.9+ (Ada, Hopper, Blackwell) and a bfloat16 output.

Elsewhere (CPU) the same numbers are emulated: quantize, dequantize, float32 matmul. That is how
the quantization error is verified without a GPU; it is slower than the exact path, not faster.

Which linears: the big per-token projections inside the blocks (each double block's img/txt qkv,
proj and two MLP linears; each single block's linear1 and linear2) — ~99 % of the linear FLOPs at
1024². Left in the compute dtype, on purpose:
- the modulation linears (one row per image: no time to gain; their shift/scale/gate multiply
  every token, so their error would be amplified),
- the embedders (img_in, txt_in, time/vector/guidance MLPs: tiny FLOPs; txt_in reads raw T5
  features whose outliers fp8 handles badly) and the final layer (writes the velocity itself).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from torch import nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448
_EPS = 1e-12
MIN_CAPABILITY = (8, 9)
# Hopper's fast fp8 accumulation (what torchao uses for inference matmuls); its error shows in
# bench_gpu's rel-err column. Set False for full-precision accumulation.
FAST_ACCUM = True


class Fp8UnsupportedError(RuntimeError):
    """fp8 was asked for on a device that has no fp8 matmul."""


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (float8 [M, K], float32 scale [M, 1]) with x ≈ q · scale, per row amax → 448."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp_min(_EPS) / FP8_MAX
    q = (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def scaled_mm_available(device: torch.device) -> bool:
    """True where torch._scaled_mm's row-wise fp8 kernel runs (CUDA capability ≥ 8.9)."""
    if device.type != "cuda" or not torch.cuda.is_available() or not hasattr(torch, "_scaled_mm"):
        return False
    return torch.cuda.get_device_capability(device) >= MIN_CAPABILITY


class Fp8Linear(nn.Module):
    """A Linear whose weight is stored as float8 rows + float32 row scales.

    ``backend``: "scaled_mm" (torch._scaled_mm, CUDA) or "emulate" (dequantize + float32 matmul).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, backend: str,
                 dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        if backend not in ("scaled_mm", "emulate"):
            raise ValueError(f"fp8 backend {backend!r} is not one of scaled_mm, emulate")
        self.in_features, self.out_features, self.backend = in_features, out_features, backend
        self.register_buffer("weight_fp8", torch.empty(out_features, in_features, dtype=FP8_DTYPE, device=device))
        self.register_buffer("weight_scale", torch.empty(1, out_features, dtype=torch.float32, device=device))
        self.register_buffer("bias", torch.empty(out_features, dtype=dtype, device=device) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, backend: str) -> Fp8Linear:
        w = linear.weight.detach()
        module = cls(linear.in_features, linear.out_features, linear.bias is not None, backend, w.dtype, w.device)
        q, scale = quantize_rows(w)
        module.weight_fp8.copy_(q)
        module.weight_scale.copy_(scale.reshape(1, -1))
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, backend={self.backend}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        xq, x_scale = quantize_rows(x.reshape(-1, self.in_features))
        if self.backend == "scaled_mm":
            # weight_fp8 [N, K] row-major, so .t() is the column-major [K, N] the kernel wants.
            out = torch._scaled_mm(xq, self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                                   out_dtype=torch.bfloat16, use_fast_accum=FAST_ACCUM)
            out = out.to(x.dtype)
        else:
            w = self.weight_fp8.float() * self.weight_scale.t()
            out = ((xq.float() * x_scale) @ w.t()).to(x.dtype)
        if self.bias is not None:  # added outside the kernel: one code path for both backends
            out = out + self.bias.to(out.dtype)
        return out.reshape(*lead, self.out_features)


@dataclass
class Fp8Report:
    swapped: int  # nn.Linear layers replaced by Fp8Linear
    kept: int  # nn.Linear layers left in the compute dtype (see the module docstring)
    backend: str
    weight_bytes_before: int  # bytes of the swapped layers' weights before/after
    weight_bytes_after: int


def fp8_target_names(transformer: nn.Module) -> list[str]:
    """Qualified names of the linears that fp8 replaces: block projections and MLPs only."""
    names = []
    for name, module in transformer.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        parts = name.split(".")
        in_block = parts[0] in ("double_blocks", "single_blocks")
        if in_block and not any(p in ("img_mod", "txt_mod", "modulation") for p in parts):
            names.append(name)
    return names


def choose_backend(device: torch.device) -> str:
    """"scaled_mm" on fp8-capable CUDA, "emulate" on the CPU (with a note); other GPUs: an error."""
    if scaled_mm_available(device):
        return "scaled_mm"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "this CUDA device"
        cap = torch.cuda.get_device_capability(device) if torch.cuda.is_available() else None
        raise Fp8UnsupportedError(
            f"fp8 needs a GPU with CUDA compute capability 8.9 or newer (L40S, H100, H200, B200); {name} has "
            f"{cap}. Run without --fp8 (the exact path) or on an fp8-capable GPU")
    return "emulate"


def swap_fp8_linears(transformer: nn.Module, backend: str | None = None, quiet: bool = False) -> Fp8Report:
    """Replace the transformer's block linears by Fp8Linear in place (see the module docstring).

    ``backend`` None picks by the weights' device (``choose_backend``). On the CPU the emulation is
    used and a one-line note says so (unless ``quiet``)."""
    targets = fp8_target_names(transformer)
    if not targets:
        raise ValueError("no block linears to convert to fp8: is this a KontextTransformer?")
    device = transformer.get_submodule(targets[0]).weight.device
    backend = backend or choose_backend(device)
    if backend == "emulate" and not quiet:
        print("kontext fp8: no fp8 matmul on this device; emulating (quantize -> dequantize -> float32 "
              "matmul): same quantization error as on a GPU, but slower than the exact path", file=sys.stderr)
    before = after = 0
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = transformer.get_submodule(parent_name)
        linear = getattr(parent, child)
        before += linear.weight.numel() * linear.weight.element_size()
        replacement = Fp8Linear.from_linear(linear, backend)
        after += replacement.weight_fp8.numel() + replacement.weight_scale.numel() * 4
        setattr(parent, child, replacement)
    kept = sum(isinstance(m, nn.Linear) for m in transformer.modules())
    return Fp8Report(swapped=len(targets), kept=kept, backend=backend, weight_bytes_before=before,
                     weight_bytes_after=after)
