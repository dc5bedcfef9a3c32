"""torch.compile for the transformer: per-block ("regional") compilation, static shape buckets,
and an on-disk cache shared by every process on the machine.

- Regional: each double and single block is compiled (``module.compile``). All blocks of a kind
  share one compiled graph (parameters are graph inputs), so compiling costs two graphs per shape
  instead of one 57-block graph, and the step cache's data-dependent skip (``bool(reuse.all())``)
  stays in eager Python between blocks.
- Static shapes (``dynamic=False``, nothing marked dynamic): one compiled graph per shape, which
  gives the best kernels. Shapes are bucketed by Kontext's preferred resolutions: a 1024² target
  with a 1024² context is 512 text + 4096 + 4096 tokens; portrait and landscape of one size share a
  bucket (same token counts). ``warm_up`` compiles the buckets before the first real batch.
- On-disk cache: inductor's FX-graph and kernel caches (and Triton's) go to ``cache_dir``, by
  default ``$KONTEXT_COMPILE_CACHE`` or ``<user cache dir>/kontext-batch/torch-compile``, so a
  second actor (or a restarted one) loads compiled code instead of recompiling.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..resolution import PREFERRED_KONTEXT_RESOLUTIONS

CACHE_ENV = "KONTEXT_COMPILE_CACHE"
FLUX_PIXELS_PER_TOKEN = 16  # FLUX: 8× autoencoder, 2×2 patches


@dataclass(frozen=True)
class ShapeBucket:
    """One static shape the blocks see: batch, text tokens, image tokens (target + context)."""

    batch: int
    txt_tokens: int
    img_tokens: int

    @property
    def tokens(self) -> int:
        return self.txt_tokens + self.img_tokens


def default_cache_dir() -> Path:
    """$KONTEXT_COMPILE_CACHE, else $XDG_CACHE_HOME or ~/.cache, + kontext-batch/torch-compile."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kontext-batch" / "torch-compile"


def use_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """Point inductor's and Triton's on-disk caches at ``cache_dir`` (created); returns it.

    Must run before the first compilation in the process (the caches read these at first use)."""
    path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True  # reuse compiled graphs across processes
    return path


def preferred_buckets(txt_tokens: int = 512, batch_sizes: Sequence[int] = (1,),
                      resolutions: Iterable[tuple[int, int]] = PREFERRED_KONTEXT_RESOLUTIONS,
                      with_context: bool = True, pixels_per_token: int = FLUX_PIXELS_PER_TOKEN) -> list[ShapeBucket]:
    """Distinct shapes of a Kontext edit at the preferred resolutions (target = context size).

    ``pixels_per_token``: a token's side in pixels (``KontextEditor.pixels_per_token``; 16 for FLUX)."""
    seen: dict[ShapeBucket, None] = {}
    for w, h in resolutions:
        n = (w // pixels_per_token) * (h // pixels_per_token)
        for b in batch_sizes:
            seen[ShapeBucket(b, txt_tokens, 2 * n if with_context else n)] = None
    return list(seen)


def compile_blocks(transformer: nn.Module, cache_dir: str | Path | None = None, mode: str | None = None,
                   max_buckets: int = 64) -> Path:
    """Compile every block of ``transformer`` in place (static shapes); returns the cache dir.

    ``max_buckets``: how many shapes may each compile before Dynamo falls back to eager; raise it
    when serving more batch sizes × resolutions than that."""
    path = use_cache_dir(cache_dir)
    import torch._dynamo.config as dynamo_config

    # "recompile_limit" was "cache_size_limit" in older torch releases
    name = "recompile_limit" if hasattr(dynamo_config, "recompile_limit") else "cache_size_limit"
    setattr(dynamo_config, name, max(getattr(dynamo_config, name), max_buckets))
    if hasattr(dynamo_config, "accumulated_recompile_limit"):
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4 * max_buckets)
    for block in [*transformer.double_blocks, *transformer.single_blocks]:
        block.compile(dynamic=False, mode=mode)
    return path


@torch.inference_mode()
def warm_up(transformer: nn.Module, buckets: Sequence[ShapeBucket], progress: bool = True) -> int:
    """Run one forward per bucket so each shape compiles now (or loads from the disk cache).

    Inputs are zeros of the bucket's shape in the transformer's dtype and device (the compiled
    code depends on shapes and dtypes only). Returns how many buckets ran."""
    from tqdm import tqdm

    cfg = transformer.config
    p = transformer.txt_in.weight
    device, dtype = p.device, p.dtype
    for bucket in tqdm(buckets, desc="compile buckets", disable=not progress):
        b = bucket.batch
        img = torch.zeros(b, bucket.img_tokens, cfg.in_channels, device=device, dtype=dtype)
        img_ids = torch.zeros(1, bucket.img_tokens, 3, device=device)
        txt = torch.zeros(b, bucket.txt_tokens, cfg.context_in_dim, device=device, dtype=dtype)
        txt_ids = torch.zeros(1, bucket.txt_tokens, 3, device=device)
        y = torch.zeros(b, cfg.vec_in_dim, device=device, dtype=dtype)
        t = torch.full((b,), 0.5, device=device, dtype=dtype)
        g = torch.full((b,), 2.5, device=device, dtype=dtype) if cfg.guidance_embed else None
        transformer(img=img, img_ids=img_ids, txt=txt, txt_ids=txt_ids, timesteps=t, y=y, guidance=g)
    return len(buckets)
