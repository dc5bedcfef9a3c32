"""Command line: `python -m kontext_core.synthetic bench | sheet OUT.png`.

(The demo catalog is written by `python -m pipeline.demo_catalog DIR`: it is a manifest.)"""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from . import benchmark, sample_batch


def _sheet(path: str, n: int, size: int, seed: int) -> None:
    """Contact sheet: pairs of (source, target) per row, instructions printed to stdout."""
    examples = sample_batch(seed, n, size)
    rows = [np.concatenate([e.source, e.target], axis=1) for e in examples]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    for index, example in enumerate(examples):
        print(f"{index:3d} {example.edit_kind:14s} {example.instruction}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m kontext_core.synthetic")
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="time sample_batch")
    bench.add_argument("--n", type=int, default=64)
    bench.add_argument("--size", type=int, default=64)
    sheet = commands.add_parser("sheet", help="save source|target pairs as one PNG")
    sheet.add_argument("path")
    sheet.add_argument("--n", type=int, default=12)
    sheet.add_argument("--size", type=int, default=64)
    sheet.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.command == "bench":
        benchmark(args.n, args.size)
    else:
        _sheet(args.path, args.n, args.size, args.seed)


if __name__ == "__main__":
    main()
