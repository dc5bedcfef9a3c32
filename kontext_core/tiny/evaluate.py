"""`python -m kontext_core.tiny.evaluate [--model kontext-tiny]`: held-out edit metrics."""

from __future__ import annotations

import argparse

from ..editor import KontextEditor
from .metrics import autoencoder_product_psnr, evaluate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Print kontext-tiny's edit metrics on held-out synthetic scenes.")
    ap.add_argument("--model", default="kontext-tiny", help="preset name or model folder")
    ap.add_argument("--n", type=int, default=64, help="held-out scenes (default 64)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    args = ap.parse_args(argv)
    editor = KontextEditor.load(args.model)
    metrics = evaluate(editor, n=args.n, steps=args.steps)
    print(metrics.summary())
    print(f"autoencoder round trip alone (the ceiling on product PSNR): "
          f"{autoencoder_product_psnr(editor, args.n):.2f} dB")
    ok = (metrics.background_improvement >= 3 and metrics.background_product_psnr >= 25
          and metrics.recolour_improvement >= 3)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
