"""The public API: load a Kontext model once, then edit batches of images."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from .autoencoder import AutoEncoder
from .config import Preset
from .fingerprint import source_fingerprint
from .loading import ModelSource, load_components, resolve_model
from .lora.apply import LoraSet, set_loras
from .resolution import check_context_scale, check_output_size, context_size, reduced_context_size
from .sampling import denoise, image_ids, noise_for_seed, pack, schedule, unpack
from .speed.options import SpeedOptions, SpeedReport, apply_speed
from .step_cache import FirstBlockCache
from .transformer import KontextTransformer

if TYPE_CHECKING:
    from .text import TextEncoders
    from .text_embeddings import TextEmbeddings

DEFAULT_MODEL = "kontext-tiny"
# Bumped whenever a change in kontext_core changes output pixels; part of the pipeline cache key.
# 2: the autoencoder runs channels_last on the CPU (float rounding can move a pixel by one level).
# 3: the transformer's eager CPU paths (matmul attention, GELU via sigmoid, linear2 on a view): ~5e-7.
# 4: a batch's context images of one size are encoded in one autoencoder call (~1e-5 in the latents).
NUMERICS_VERSION = 4


class EditError(ValueError):
    """A bad edit request (empty instruction, impossible size, mismatched lists)."""


@dataclass
class EditOutput:
    images: list[Image.Image]
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds for the batch
    truncated: list[bool] = field(default_factory=list)  # instruction cut at the T5 token limit
    clip_truncated: list[bool] = field(default_factory=list)  # cut at CLIP's limit (its pooled embedding)
    sizes: list[tuple[int, int]] = field(default_factory=list)  # output (w, h) per row
    step_cache_reused: int = 0  # row-steps that reused cached blocks (0 unless step_cache is on)
    row_steps: int = 0  # row-steps in all


def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [1, 3, H, W] float32 in [-1, 1]."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1)[None] / 127.5 - 1.0


def tensor_to_images(x: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [-1, 1] -> uint8 PIL images, rounded to nearest (diffusers)."""
    arr = ((x.float().clamp(-1, 1) * 0.5 + 0.5) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def _image_key(image: Image.Image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest() + f":{image.size}:{image.mode}"


def _row(emb: TextEmbeddings, i: int) -> TextEmbeddings:
    from .text_embeddings import TextEmbeddings

    return TextEmbeddings(emb.t5[i:i + 1], emb.pooled[i:i + 1], [emb.truncated[i]],
                          [emb.clip_truncated[i] if emb.clip_truncated else False])


class _Timer:
    def __init__(self, timings: dict[str, float], device: torch.device):
        self.timings, self.device = timings, device

    def __call__(self, phase: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                if timer.device.type == "cuda":
                    torch.cuda.synchronize(timer.device)
                timer.timings[phase] = timer.timings.get(phase, 0.0) + time.perf_counter() - self.t0

        return _Ctx()


class KontextEditor:
    """A resident FLUX.1 Kontext model. ``load`` once, then call ``edit`` on batches."""

    def __init__(self, preset: Preset, transformer: KontextTransformer, autoencoder: AutoEncoder,
                 text: TextEncoders | None, device: torch.device, dtype: torch.dtype, fingerprint: str,
                 speed: SpeedOptions | None = None, speed_report: SpeedReport | None = None):
        self.preset = preset
        self.transformer = transformer
        self.autoencoder = autoencoder
        self.text = text
        self.device = device
        self.dtype = dtype
        self.fingerprint = fingerprint
        self.speed = speed or SpeedOptions()
        self.speed_report = speed_report or SpeedReport()

    @classmethod
    def load(cls, model: str | Path = DEFAULT_MODEL, device: str | torch.device = "cpu",
             dtype: torch.dtype = torch.float32, speed: SpeedOptions | None = None,
             text: bool = True) -> KontextEditor:
        """``speed``: exact-path speed-ups (fused RoPE, compile) and fast-path approximations (fp8);
        see kontext_core.speed. Default: the plain exact path. ``text=False``: no text encoders
        (``edit`` then needs ``embeddings``, e.g. from kontext_core.text_phase)."""
        source: ModelSource = resolve_model(model)
        device = torch.device(device)
        transformer, autoencoder, text = load_components(source, device, dtype, text=text)
        speed = speed or SpeedOptions()
        report = apply_speed(transformer, speed)
        return cls(source.preset, transformer, autoencoder, text, device, dtype, source_fingerprint(source),
                   speed, report)

    @property
    def pixels_per_token(self) -> int:
        return self.preset.pixels_per_token

    def context_size_for(self, image_size: tuple[int, int]) -> tuple[int, int]:
        return context_size(self.preset.resolution, image_size[0], image_size[1], self.pixels_per_token)

    @torch.inference_mode()
    def encode_context(self, image: Image.Image, scale: float = 1.0) -> tuple[torch.Tensor, tuple[int, int]]:
        """Resize (LANCZOS) to the policy's context size (times ``scale``, the fast path's reduced
        context), encode, pack: [1, N_c, 4C] and the encoded (w, h)."""
        return self.encode_contexts([image], scale)[0]

    @torch.inference_mode()
    def encode_contexts(self, images: Sequence[Image.Image], scale: float = 1.0) -> list[tuple[torch.Tensor, tuple[int, int]]]:
        """``encode_context`` of each image, those of one encoded size in one autoencoder call
        (one batched call keeps the device busy where one image at a time would not)."""
        prepared = []
        for image in images:
            w, h = reduced_context_size(self.context_size_for(image.size), scale, self.pixels_per_token)
            image = image.convert("RGB")
            if image.size != (w, h):
                image = image.resize((w, h), Image.Resampling.LANCZOS)
            prepared.append(image)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(prepared):
            by_size.setdefault(image.size, []).append(i)
        out: list[tuple[torch.Tensor, tuple[int, int]] | None] = [None] * len(prepared)
        for size, idx in by_size.items():
            x = torch.cat([image_to_tensor(prepared[i]) for i in idx]).to(self.device, self.dtype)
            tokens = pack(self.autoencoder.encode(x))
            for j, i in enumerate(idx):
                out[i] = (tokens[j : j + 1], size)
        return out  # type: ignore[return-value]

    def _embeddings(self, texts: list[str], given: Mapping[str, TextEmbeddings]) -> TextEmbeddings:
        """The batch's unique texts' embeddings: the given ones, the rest encoded here."""
        from .text_embeddings import TextEmbeddings

        missing = [t for t in texts if t not in given]
        if missing and self.text is None:
            raise EditError(f"this editor was loaded without text encoders and no embedding was given for "
                            f"{missing[0]!r}: pass embeddings= or load with text=True")
        encoded = self.text.encode(missing) if missing else None
        rows = [given[t] if t in given else _row(encoded, missing.index(t)) for t in texts]
        return TextEmbeddings(torch.cat([r.t5.to(self.device) for r in rows]),
                              torch.cat([r.pooled.to(self.device) for r in rows]),
                              [r.truncated[0] for r in rows], [r.clip_truncated[0] for r in rows])

    @torch.inference_mode()
    def edit(
        self,
        images: Sequence[Image.Image],
        instructions: Sequence[str],
        seeds: Sequence[int],
        steps: int | None = None,
        guidance: float | None = None,
        size: tuple[int, int] | None = None,
        progress: Callable[[int, int], None] | None = None,
        step_cache: float | None = None,
        context_scale: float | None = None,
        loras: LoraSet | None = None,
        lora_mode: str = "unfused",
        embeddings: Mapping[str, TextEmbeddings] | None = None,
    ) -> EditOutput:
        """Edit each image by its instruction. Output size defaults to the context's size.

        ``step_cache``: opt-in first-block caching threshold (an approximation; None/0 = exact).
        ``context_scale``: opt-in reduced context (an approximation; None/1 = exact): the source is
        encoded at this fraction of its context size, fewer tokens to attend to, and laid on the
        full-size positions. The output size does not change.
        ``loras``: [(LoraAdapter, scale), ...] to switch to before this batch ([] = the base model;
        None = keep the set applied, see kontext_core.lora.set_loras); ``lora_mode``: unfused|fused.
        ``embeddings``: instruction -> its precomputed one-row TextEmbeddings (encoded alone, e.g.
        by kontext_core.text_phase); instructions found there are not encoded again.

        Rows sharing an image or an instruction share context latents / text embeddings. Each
        row's noise comes from its own seed, so its pixels do not depend on the batch.
        """
        n = len(images)
        if not (n == len(instructions) == len(seeds)):
            raise EditError(f"images, instructions and seeds differ in length ({n}, {len(instructions)}, {len(seeds)})")
        if any(not str(i).strip() for i in instructions):
            raise EditError("empty instruction: every row needs a non-empty instruction")
        if any(int(s) < 0 for s in seeds):
            raise EditError("seeds must be ≥ 0")
        steps = steps or self.preset.sampler.steps
        guidance = self.preset.sampler.guidance if guidance is None else guidance
        ppt = self.pixels_per_token
        if size is not None:
            size = check_output_size(tuple(size), ppt)
        scale = check_context_scale(context_scale)
        if loras is not None:
            set_loras(self.transformer, loras, lora_mode)
        timings: dict[str, float] = {}
        timer = _Timer(timings, self.device)

        with timer("text_encode"):
            unique_text = list(dict.fromkeys(instructions))
            emb = self._embeddings(unique_text, embeddings or {})
            text_index = [unique_text.index(i) for i in instructions]

        with timer("context_encode"):
            # key -> (tokens, encoded size, full context size: the default output size)
            image_keys = [_image_key(image) for image in images]
            unique = dict(zip(image_keys, images, strict=True))
            encoded = self.encode_contexts(list(unique.values()), scale)
            contexts: dict[str, tuple[torch.Tensor, tuple[int, int], tuple[int, int]]] = {
                key: (*enc, self.context_size_for(image.size))
                for (key, image), enc in zip(unique.items(), encoded, strict=True)
            }

        groups: dict[tuple, list[int]] = {}
        for row, key in enumerate(image_keys):
            _, ctx_size, full_size = contexts[key]
            groups.setdefault((ctx_size, full_size, size or full_size), []).append(row)

        total_steps, done = len(groups) * steps, 0
        reused = 0
        latents_by_row: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}
        for (ctx_size, full_size, out_size), rows in groups.items():
            with timer("denoise"):
                lat_h, lat_w = out_size[1] // ppt * 2, out_size[0] // ppt * 2
                c = self.preset.autoencoder.z_channels
                noise = torch.cat([noise_for_seed(seeds[r], c, lat_h, lat_w, self.dtype) for r in rows]).to(self.device)
                img = pack(noise)
                img_ids = image_ids(lat_h // 2, lat_w // 2, 0.0, self.device)
                ctx = torch.cat([contexts[image_keys[r]][0] for r in rows])
                ctx_rows, ctx_cols = ctx_size[1] // ppt, ctx_size[0] // ppt
                stride = (full_size[1] // ppt / ctx_rows, full_size[0] // ppt / ctx_cols)
                ctx_ids = image_ids(ctx_rows, ctx_cols, 1.0, self.device, stride)
                txt = emb.t5[[text_index[r] for r in rows]].to(self.dtype)
                y = emb.pooled[[text_index[r] for r in rows]].to(self.dtype)
                txt_ids = torch.zeros(1, txt.shape[1], 3, device=self.device)
                times = schedule(steps, img.shape[1], self.preset.sampler)

                def step_progress(i: int, total: int, base: int = done) -> None:
                    if progress is not None:
                        progress(base + i, total_steps)

                cache = FirstBlockCache(step_cache) if step_cache else None
                out = denoise(self.transformer, img, img_ids, ctx, ctx_ids, txt, txt_ids, y, times, guidance,
                              step_progress, step_cache=cache)
                done += steps
                reused += cache.skipped if cache else 0
            with timer("decode"):
                pixels = self.autoencoder.decode(unpack(out, lat_h, lat_w))
                for r, p in zip(rows, pixels, strict=True):
                    latents_by_row[r] = (p, out_size)
        decoded = [latents_by_row[r] for r in range(n)]
        return EditOutput(
            images=[tensor_to_images(p[None])[0] for p, _ in decoded],
            timings=timings,
            truncated=[emb.truncated[text_index[r]] for r in range(n)],
            clip_truncated=[emb.clip_truncated[text_index[r]] for r in range(n)],
            sizes=[s for _, s in decoded],
            step_cache_reused=reused,
            row_steps=n * steps,
        )
