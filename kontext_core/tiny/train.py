"""Train kontext-tiny from scratch: `python -m kontext_core.tiny.train --out DIR`.

Three phases, all resumable from ``DIR/train_state.pt`` and deterministic given ``--seed``:
1. autoencoder: pixel reconstruction (L1 + MSE) of crops of synthetic scenes, half of them centred
   on the product, product pixels weighted up (product edges are what a 4x-down autoencoder loses
   first and what a catalog reviewer looks at); then the latent shift/scale factors are measured on
   training data (as FLUX's 0.1159/0.3611 were);
2. transformer: the rectified-flow objective on (source → target) pairs, the source encoded as
   Kontext context tokens, t drawn logit-normal and shifted like the sampling schedule, tokens that
   cover the product weighted up; an EMA of the weights is what ships. The text encoders stay at
   their seeded random init (frozen). Its blocks are compiled, attention on the MATH backend
   (1.7x faster steps on a CPU);
3. decoder: the finished transformer edits a few thousand training scenes, and the decoder is
   fine-tuned to turn those output latents into the exact targets (the encoder stays fixed).
All phases run under bf16 autocast (fp32 master weights): 1.4-1.6x faster on a CPU with AVX-512
BF16, and what a GPU would use anyway.
Writes a native model folder (kontext.json, transformer.safetensors, ae.safetensors, text
encoders) that ``KontextEditor.load(DIR)`` reads, plus training.json (arguments, steps run, time,
held-out metrics), from which the shipped MODEL_CARD.md is written.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from ..config import preset_from_dict
from ..editor import KontextEditor
from ..loading import NATIVE_PRESET_FILE, build_random
from ..sampling import image_ids, pack
from ..speed.compile import compile_blocks
from ..synthetic import sample_batch
from .metrics import evaluate
from .recipe import IMAGE_SIZE, tiny_preset_dict

GUIDANCE = 2.5


class SceneBatches(IterableDataset):
    """Batch k is sample_batch(seed·1e6 + k): the same stream whatever the worker count."""

    def __init__(self, seed: int, batch: int, start: int, stop: int, reuse: int = 1):
        self.seed, self.batch, self.start, self.stop, self.reuse = seed, batch, start, stop, reuse

    def __iter__(self):
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        for k in range(self.start + wid, self.stop, nw):
            ex = sample_batch(self.seed * 1_000_000 + k, self.batch, size=IMAGE_SIZE, split="train")
            src = np.stack([e.source for e in ex])
            tgt = np.stack([e.target for e in ex])
            mask = np.stack([e.mask for e in ex])
            for _ in range(self.reuse):  # scene rendering is the bottleneck on a fast GPU
                yield torch.from_numpy(src), torch.from_numpy(tgt), [e.instruction for e in ex], torch.from_numpy(mask)


def _to_pixels(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.to(device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


REUSE = 1  # set from --reuse


def _loader(seed: int, batch: int, start: int, stop: int, workers: int) -> DataLoader:
    r = REUSE
    return DataLoader(SceneBatches(seed, batch, start // r, -(-stop // r), r), batch_size=None, num_workers=workers,
                      prefetch_factor=4 if workers else None, persistent_workers=False)


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def _product_region(mask: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Product pixels plus a 2-pixel ring around them (where the edges are), 0/1 as (B,1,H,W)."""
    return F.max_pool2d(mask.to(device).float()[:, None], 5, 1, 2)


def product_crops(x: torch.Tensor, w: torch.Tensor, mask: torch.Tensor, size: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Square crops: even rows centred (±4 px) on a random product pixel, odd rows anywhere."""
    full = x.shape[-1]
    if size >= full:
        return x, w
    n = len(x)
    ys = torch.randint(0, full - size + 1, (n,), generator=generator)
    xs = torch.randint(0, full - size + 1, (n,), generator=generator)
    jitter = torch.randint(-4, 5, (n, 2), generator=generator)
    pick = torch.rand(n, generator=generator)
    for i in range(0, n, 2):
        yy, xx = torch.nonzero(mask[i], as_tuple=True)
        if len(yy):
            j = int(pick[i] * len(yy))
            ys[i] = int(min(max(int(yy[j]) - size // 2 + int(jitter[i, 0]), 0), full - size))
            xs[i] = int(min(max(int(xx[j]) - size // 2 + int(jitter[i, 1]), 0), full - size))
    rows = range(n)
    return (torch.stack([x[i, :, ys[i] : ys[i] + size, xs[i] : xs[i] + size] for i in rows]),
            torch.stack([w[i, :, ys[i] : ys[i] + size, xs[i] : xs[i] + size] for i in rows]))


def train_autoencoder(ae, device, args, state, path: Path) -> None:
    opt = torch.optim.AdamW(ae.parameters(), lr=args.ae_lr, weight_decay=0.0)
    if "ae_opt" in state:
        opt.load_state_dict(state["ae_opt"])
    start = state.get("ae_step", 0)
    gen = torch.Generator().manual_seed(args.seed + 2)
    if "ae_gen" in state:
        gen.set_state(state["ae_gen"])
    bar = tqdm(total=args.ae_steps, initial=start, desc="autoencoder", unit="step")
    t0 = time.time()
    batches = _loader(args.seed, args.ae_batch, start, args.ae_steps, args.workers)
    for k, (src, tgt, _, mask) in enumerate(batches, start):
        frac = k / args.ae_steps
        if args.ae_max_minutes:
            frac = max(frac, (time.time() - t0) / (60 * args.ae_max_minutes))
        out_of_time = frac >= 1.0
        for g in opt.param_groups:
            g["lr"] = args.ae_lr * min(1.0, (k + 1) / 100) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        masks = torch.cat([mask, mask])
        x, w = product_crops(_to_pixels(torch.cat([src, tgt]), device),
                             1.0 + args.product_weight * _product_region(masks, device), masks, args.ae_crop, gen)
        with _autocast(device, args.bf16):
            z = ae.encoder(x)[:, : ae.config.z_channels]
            rec = ae.decoder(z)
        err = rec.float() - x
        loss = ((err.abs() + err.pow(2)) * w).mean() / w.mean() + 1e-4 * z.float().pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (k + 1) % args.checkpoint_every == 0 or k + 1 == args.ae_steps or out_of_time:
            state.update(ae=ae.state_dict(), ae_opt=opt.state_dict(), ae_gen=gen.get_state(),
                         ae_step=args.ae_steps if out_of_time else k + 1, ae_steps_run=k + 1)
            _save_state(path, state)
        if out_of_time:
            tqdm.write(f"autoencoder: time budget reached at step {k + 1}")
            break
    bar.close()


@torch.no_grad()
def latent_stats(ae, device, args) -> tuple[float, float]:
    batch = min(64, args.stats_scenes)  # the default 512: the 8 batches of 64 it always was
    zs = []
    for src, tgt, _, _ in _loader(args.seed + 7, batch, 0, -(-args.stats_scenes // batch), 0):
        zs.append(ae.encoder(_to_pixels(torch.cat([src, tgt]), device))[:, : ae.config.z_channels].float().cpu())
    z = torch.cat(zs)
    return float(z.mean()), float(z.std())


def sample_t(n: int, tokens: int, generator: torch.Generator, device) -> torch.Tensor:
    """Logit-normal t, shifted like the sampling schedule for this token count."""
    slope = (1.15 - 0.5) / (4096 - 256)
    mu = slope * tokens + 0.5 - slope * 256
    t = torch.sigmoid(torch.randn(n, generator=generator))
    t = math.exp(mu) / (math.exp(mu) + (1 / t - 1))
    return t.clamp(1e-4, 1.0).to(device)


class TextCache:
    """Instructions repeat a lot; their (frozen) embeddings are computed once."""

    def __init__(self, text):
        self.text, self.cache = text, {}

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        todo = [p for p in dict.fromkeys(prompts) if p not in self.cache]
        if todo:
            emb = self.text.encode(todo)
            for i, p in enumerate(todo):
                self.cache[p] = (emb.t5[i], emb.pooled[i])
        return torch.stack([self.cache[p][0] for p in prompts]), torch.stack([self.cache[p][1] for p in prompts])


def compile_transformer(tf) -> None:
    """Compile each transformer block in place (state_dict keys unchanged); run it under
    ``compiled_attention()``. Where compiling fails (no C compiler), dynamo falls back to eager
    instead of stopping the run."""
    import torch._dynamo

    torch._dynamo.config.suppress_errors = True
    compile_blocks(tf)


def compiled_attention():
    """The attention backend for compiled training: plain matmul + softmax (MATH), which inductor
    fuses with the block around it. Compiled with CPU flash attention (opaque to inductor) a step
    gains little; this way the forward + backward is ~1.7x faster on a 2-core CPU
    (benchmarks/bench_train_step.py). Dynamo traces under the backend active at the first call,
    so every compiled step must run inside this context."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def train_flow(editor: KontextEditor, ema, device, args, state, path: Path) -> None:
    tf, ae = editor.transformer, editor.autoencoder
    opt = torch.optim.AdamW(tf.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.99))
    if "tf_opt" in state:
        opt.load_state_dict(state["tf_opt"])
    start = state.get("tf_step", 0)
    gen = torch.Generator().manual_seed(args.seed + 1)
    if "tf_gen" in state:
        gen.set_state(state["tf_gen"])
    texts = TextCache(editor.text)
    attention = compiled_attention if args.compile else contextlib.nullcontext
    if args.compile:
        compile_transformer(tf)
    grid = IMAGE_SIZE // editor.pixels_per_token
    ids = torch.cat((image_ids(grid, grid, 0.0, device), image_ids(grid, grid, 1.0, device)), dim=1)
    txt_ids = torch.zeros(1, editor.preset.text.t5_max_length, 3, device=device)
    pe = tf.rope(torch.cat((txt_ids, ids), dim=1))
    bar = tqdm(total=args.steps, initial=start, desc="transformer", unit="step")
    losses: list[float] = []
    t0 = time.time()
    patch = editor.pixels_per_token
    for k, (src, tgt, prompts, mask) in enumerate(_loader(args.seed + 1, args.batch, start, args.steps, args.workers), start):
        # Progress through the run: by steps, or by wall time when a time budget is set (then the
        # result depends on the machine's speed; without one, training is deterministic).
        frac = k / args.steps
        if args.max_minutes:
            frac = max(frac, (time.time() - t0) / (60 * args.max_minutes))
        lr = args.lr * min(1.0, (k + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.no_grad(), _autocast(device, args.bf16):  # bf16 latents: 0.5 % rms error, 2x faster
            z = ae.encode(_to_pixels(torch.cat([src, tgt]), device)).float()
            ctx, x0 = pack(z[: len(src)]), pack(z[len(src) :])
            txt, y = texts(prompts)
        n = x0.shape[0]
        t = sample_t(n, x0.shape[1], gen, device)
        eps = torch.randn(x0.shape, generator=gen).to(device)
        xt = (1 - t[:, None, None]) * x0 + t[:, None, None] * eps
        with _autocast(device, args.bf16), attention():
            pred = tf(img=torch.cat((xt, ctx), dim=1), img_ids=ids, txt=txt, txt_ids=txt_ids, timesteps=t, y=y,
                      guidance=torch.full((n,), GUIDANCE, device=device), pe=pe)[:, : x0.shape[1]]
        # Tokens covering the product (or its edge ring) weigh more: keeping it intact is the job.
        cover = F.avg_pool2d(_product_region(mask, device), patch).flatten(1)  # share of each token
        tok_w = 1.0 + args.product_weight * cover
        loss = ((pred.float() - (eps - x0)).pow(2).mean(-1) * tok_w).mean() / tok_w.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(tf.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(args.ema, (1 + k) / (10 + k))
            for pe_, p in zip(ema.parameters(), tf.parameters(), strict=True):
                pe_.lerp_(p, 1 - decay)
        losses.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{lr:.1e}")
        if args.eval_every and (k + 1) % args.eval_every == 0:
            m = evaluate(_with_transformer(editor, ema), n=args.eval_n, progress=False)
            tqdm.write(f"step {k + 1}: loss {np.mean(losses[-200:]):.4f} | bg {m.background_improvement:.2f}x "
                       f"psnr {m.background_product_psnr:.1f} dB | recolour {m.recolour_improvement:.2f}x")
        if (k + 1) % args.checkpoint_every == 0 or k + 1 == args.steps or frac >= 1.0:
            state.update(tf=tf.state_dict(), ema=ema.state_dict(), tf_opt=opt.state_dict(),
                         tf_step=args.steps if frac >= 1.0 else k + 1, tf_steps_run=k + 1, tf_gen=gen.get_state(),
                         tf_losses=losses[-1000:])
            _save_state(path, state)
        if frac >= 1.0:
            tqdm.write(f"transformer: time budget reached at step {k + 1}")
            break
    bar.close()


@torch.no_grad()
def edit_latents(editor: KontextEditor, n: int, seed: int, batch: int = 32) -> dict[str, torch.Tensor]:
    """The trained model's own output latents on ``n`` training-split edits, with their exact
    targets and product masks: the decoder phase's data."""
    from PIL import Image

    ae, captured = editor.autoencoder, []
    decode = ae.decode
    ae.decode = lambda z: captured.append(z.half().cpu()) or decode(z)  # keep the latents it decodes
    try:
        examples = sample_batch(seed, n, size=IMAGE_SIZE, split="train")
        for i in tqdm(range(0, n, batch), desc="decoder data", unit="batch"):
            chunk = examples[i : i + batch]
            editor.edit([Image.fromarray(e.source) for e in chunk], [e.instruction for e in chunk],
                        [seed + i + k for k in range(len(chunk))])
    finally:
        del ae.decode
    return {"z": torch.cat(captured), "target": torch.from_numpy(np.stack([e.target for e in examples])),
            "mask": torch.from_numpy(np.stack([e.mask for e in examples]))}


def train_decoder(editor: KontextEditor, device, args, state, path: Path) -> None:
    """Phase 3: fine-tune the decoder on the transformer's own outputs → exact targets. The
    transformer's latents for product edges are slightly off in ways a decoder can learn to
    undo (+0.5 dB product PSNR on the earlier weights); the encoder, and so every context
    latent, stays as it was."""
    ae = editor.autoencoder
    data_path = path.with_name("decoder_data.pt")
    if data_path.exists():
        data = torch.load(data_path)
    else:
        data = edit_latents(editor, args.dec_scenes, (args.seed + 3) * 1_000_000)
        _save_state(data_path, data)
    pixels = data["target"].permute(0, 3, 1, 2).float() / 127.5 - 1.0
    weight = 1.0 + args.product_weight * _product_region(data["mask"], torch.device("cpu"))
    ae.decoder.requires_grad_(True).train()
    opt = torch.optim.AdamW(ae.decoder.parameters(), lr=args.dec_lr, weight_decay=0.0)
    if "dec_opt" in state:
        opt.load_state_dict(state["dec_opt"])
    gen = torch.Generator().manual_seed(args.seed + 4)
    if "dec_gen" in state:
        gen.set_state(state["dec_gen"])
    start = state.get("dec_step", 0)
    bar = tqdm(total=args.dec_steps, initial=start, desc="decoder", unit="step")
    t0 = time.time()
    for k in range(start, args.dec_steps):
        frac = k / args.dec_steps
        if args.dec_max_minutes:
            frac = max(frac, (time.time() - t0) / (60 * args.dec_max_minutes))
        for g in opt.param_groups:
            g["lr"] = args.dec_lr * min(1.0, (k + 1) / 50) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))
        idx = torch.randint(0, len(pixels), (args.dec_batch,), generator=gen)
        with _autocast(device, args.bf16):
            rec = ae.decode(data["z"][idx].to(device).float())
        err = rec.float() - pixels[idx].to(device)
        w = weight[idx].to(device)
        loss = ((err.abs() + err.pow(2)) * w).mean() / w.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        done = k + 1 == args.dec_steps or frac >= 1.0
        if (k + 1) % args.checkpoint_every == 0 or done:
            state.update(ae_ft=ae.state_dict(), dec_opt=opt.state_dict(), dec_gen=gen.get_state(),
                         dec_step=args.dec_steps if done else k + 1, dec_steps_run=k + 1)
            _save_state(path, state)
        if frac >= 1.0:
            tqdm.write(f"decoder: time budget reached at step {k + 1}")
            break
    bar.close()
    ae.eval().requires_grad_(False)
    data_path.unlink(missing_ok=True)


def _with_transformer(editor: KontextEditor, transformer) -> KontextEditor:
    return KontextEditor(editor.preset, transformer, editor.autoencoder, editor.text, editor.device,
                         editor.dtype, editor.fingerprint)


def write_model(out: Path, editor: KontextEditor, ema, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / NATIVE_PRESET_FILE).write_text(json.dumps(editor.preset.to_dict(), indent=1) + "\n")
    # fp16 storage keeps the shipped model under 25 MB; it is loaded back as float32.
    save_file({k: v.detach().half().cpu().contiguous() for k, v in ema.state_dict().items()},
              str(out / "transformer.safetensors"))
    save_file({k: v.detach().float().cpu().contiguous() for k, v in editor.autoencoder.state_dict().items()},
              str(out / "ae.safetensors"))
    editor.text.to("cpu").save(out)
    (out / "training.json").write_text(json.dumps(meta, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="model folder to write (and resume from)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32, help="transformer batch (edit pairs)")
    ap.add_argument("--ae-batch", type=int, default=32, help="autoencoder batch (scenes; source and target both used)")
    ap.add_argument("--ae-crop", type=int, default=32, help="autoencoder training crop size in pixels")
    ap.add_argument("--ae-steps", type=int, default=5000)
    ap.add_argument("--ae-lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=11500, help="transformer steps")
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--product-weight", type=float, default=4.0,
                    help="product emphasis: autoencoder pixels and transformer tokens covering the product "
                         "(plus a 2-px ring) weigh 1 + this × their product share")
    ap.add_argument("--no-bf16", dest="bf16", action="store_false", help="train in plain float32")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--workers", type=int, default=1, help="data generator processes")
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--eval-n", type=int, default=32)
    ap.add_argument("--max-minutes", type=float, default=0, help="transformer time budget (0: none)")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="train the transformer eagerly (compiling needs a C compiler; 1.7x faster on a CPU)")
    ap.add_argument("--dec-scenes", type=int, default=3072,
                    help="decoder phase: training edits the finished transformer makes for the decoder to learn from")
    ap.add_argument("--dec-steps", type=int, default=1200, help="decoder phase steps (0: skip the phase)")
    ap.add_argument("--dec-batch", type=int, default=32)
    ap.add_argument("--dec-lr", type=float, default=3e-4)
    ap.add_argument("--dec-max-minutes", type=float, default=0, help="decoder phase time budget (0: none)")
    ap.add_argument("--final-eval-n", type=int, default=64, help="held-out scenes in the final evaluation")
    ap.add_argument("--ae-max-minutes", type=float, default=0, help="autoencoder time budget (0: none)")
    ap.add_argument("--stats-scenes", type=int, default=512,
                    help="scenes whose latents set the latent shift and scale (fewer: a quicker trial run)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--reuse", type=int, default=1, help="use each generated batch this many times")
    args = ap.parse_args(argv)
    global REUSE
    REUSE = args.reuse
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / "train_state.pt"
    state = torch.load(state_path, weights_only=False) if state_path.exists() else {}
    if state:
        print(f"resuming from {state_path}: autoencoder step {state.get('ae_step', 0)}, "
              f"transformer step {state.get('tf_step', 0)}")
    t0 = time.time() - state.get("elapsed", 0.0)

    preset = preset_from_dict(tiny_preset_dict())
    transformer, ae, text = build_random(preset, args.seed)
    transformer, ae, text = transformer.to(device).train(), ae.to(device), text.to(device).eval()
    if "ae" in state:
        ae.load_state_dict(state["ae"])
    if state.get("ae_step", 0) < args.ae_steps:
        ae.train()
        train_autoencoder(ae, device, args, state, state_path)
    ae.eval().requires_grad_(False)
    if "latent_shift" not in state:
        state["latent_shift"], std = latent_stats(ae, device, args)
        state["latent_scale"] = 1.0 / std
    preset = preset_from_dict(tiny_preset_dict(state["latent_scale"], state["latent_shift"]))
    ae.config = preset.autoencoder
    if "tf" in state:
        transformer.load_state_dict(state["tf"])
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    if "ema" in state:
        ema.load_state_dict(state["ema"])
    editor = KontextEditor(preset, transformer, ae, text, device, torch.float32, "training")
    if state.get("tf_step", 0) < args.steps:
        train_flow(editor, ema, device, args, state, state_path)
    if "ae_ft" in state:
        ae.load_state_dict(state["ae_ft"])
    if state.get("dec_step", 0) < args.dec_steps:
        train_decoder(_with_transformer(editor, ema), device, args, state, state_path)
    state["elapsed"] = time.time() - t0
    _save_state(state_path, state)
    final = evaluate(_with_transformer(editor, ema), n=args.final_eval_n)
    print(final.summary())
    meta = {
        "seed": args.seed, "batch": args.batch, "ae_batch": args.ae_batch, "ae_crop": args.ae_crop,
        "ae_steps": args.ae_steps, "steps": args.steps, "ae_steps_run": state.get("ae_steps_run"),
        "steps_run": state.get("tf_steps_run"), "dec_scenes": args.dec_scenes, "dec_steps": args.dec_steps,
        "dec_steps_run": state.get("dec_steps_run"), "compile": args.compile, "lr": args.lr, "product_weight": args.product_weight,
        "bf16": args.bf16, "command": "python -m kontext_core.tiny.train " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "train_seconds": round(state["elapsed"], 1),
        "metrics": {k: round(v, 4) if isinstance(v, float) else v for k, v in final.__dict__.items()},
    }
    write_model(args.out, editor, ema, meta)
    print(f"wrote {args.out} ({meta['train_seconds']:.0f} s of training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
