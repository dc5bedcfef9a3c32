"""Fine-tune only the autoencoder's decoder of a trained kontext-tiny (CPU-friendly).

The encoder, and therefore every latent the transformer was trained on, stays fixed, so the
transformer remains valid. The loss weights product pixels more (products are a small part of
each frame but carry the detail a reviewer looks at).
`python -m kontext_core.tiny.finetune_decoder --model DIR --steps N [--minutes M]` rewrites
DIR/ae.safetensors (keeping the previous as ae.before-finetune.safetensors) and re-evaluates.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from ..editor import KontextEditor
from ..synthetic import sample_batch
from .metrics import evaluate
from .recipe import IMAGE_SIZE


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--minutes", type=float, default=0, help="wall-clock budget (0: none)")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--product-weight", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    editor = KontextEditor.load(args.model)
    ae = editor.autoencoder
    ae.requires_grad_(False)
    ae.decoder.requires_grad_(True).train()
    opt = torch.optim.AdamW(ae.decoder.parameters(), lr=args.lr, weight_decay=0.0)
    t0 = time.time()
    bar = tqdm(total=args.steps, desc="decoder", unit="step")
    for k in range(args.steps):
        frac = k / args.steps
        if args.minutes:
            frac = max(frac, (time.time() - t0) / (60 * args.minutes))
        if frac >= 1:
            break
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * frac))
        ex = sample_batch(args.seed * 1_000_000 + k, args.batch, size=IMAGE_SIZE, split="train")
        imgs = np.stack([e.source for e in ex] + [e.target for e in ex])
        masks = np.stack([e.mask for e in ex] + [e.mask for e in ex])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        w = 1 + (args.product_weight - 1) * torch.from_numpy(masks)[:, None].float()
        with torch.no_grad():
            z = ae.encoder(x)[:, : ae.config.z_channels]
        rec = ae.decoder(z)
        loss = ((rec - x).abs() * w).mean() + ((rec - x).pow(2) * w).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    ae.eval().requires_grad_(False)
    metrics = evaluate(editor, n=64)
    print(metrics.summary())
    path = args.model / "ae.safetensors"
    backup = args.model / "ae.before-finetune.safetensors"
    if not backup.exists():
        shutil.copy2(path, backup)
    save_file({k: v.detach().float().contiguous() for k, v in ae.state_dict().items()}, str(path))
    meta_path = args.model / "training.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["decoder_finetune"] = {"steps": k, "batch": args.batch, "lr": args.lr, "product_weight": args.product_weight,
                                "seconds": round(time.time() - t0, 1), "device": "cpu"}
    meta["metrics"] = {kk: round(v, 4) if isinstance(v, float) else v for kk, v in metrics.__dict__.items()}
    meta_path.write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
