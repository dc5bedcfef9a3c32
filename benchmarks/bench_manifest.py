"""Benchmark: validate and iterate a large manifest; print wall time and peak RSS.

    .venv/bin/python benchmarks/bench_manifest.py [--rows 200000]

Writes a manifest of --rows rows (and a baseline of a tenth of that) to a temp folder, then
runs each phase in a fresh process so its peak RSS (getrusage ru_maxrss) is its own. Streaming
means the big manifest's peak RSS should match the baseline's, not grow ten-fold.

Linux keeps ru_maxrss across fork+exec, so this parent process stays small: it imports neither
pyarrow nor manifests (hence a script, not ``python -m manifests...``), and every piece of work,
writing included, runs in a child.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("imports", "validate", "validate+files", "iterate")
_IMAGES = 100


def write_manifest(path: str, rows: int, row_group_rows: int = 16384) -> None:
    """Write a valid manifest chunk by chunk (memory: one chunk), with 100 shared images."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = os.path.dirname(path)
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    for i in range(_IMAGES):
        with open(os.path.join(folder, "images", f"p{i:03d}.png"), "wb") as f:
            f.write(b"\x89PNG")  # existence is all the benchmark checks
    schema = pa.schema(
        [
            ("image", pa.string()),
            ("instruction", pa.string()),
            ("seed", pa.int64()),
            ("product_id", pa.string()),
            ("variant", pa.string()),
            ("steps", pa.int64()),
            ("meta_category", pa.string()),
        ]
    )
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, row_group_rows):
            idx = range(start, min(rows, start + row_group_rows))
            writer.write_table(
                pa.table(
                    {
                        "image": [f"images/p{i % _IMAGES:03d}.png" for i in idx],
                        "instruction": [f"place the product on background {i % 7}" for i in idx],
                        "seed": list(idx),
                        "product_id": [f"p{i % _IMAGES:03d}" for i in idx],
                        "variant": [f"v{i % 7}" for i in idx],
                        "steps": [28] * len(idx),
                        "meta_category": ["mugs"] * len(idx),
                    },
                    schema=schema,
                )
            )


def run_phase(phase: str, manifest: str, batch_rows: int, rows: int = 0) -> dict:
    """Runs in the child process."""
    start = time.perf_counter()
    if phase.startswith("write:"):
        write_manifest(manifest, int(phase.split(":")[1]))
        rows = int(phase.split(":")[1])
        return {"phase": "write", "rows": rows, "wall_s": time.perf_counter() - start}

    sys.path.insert(0, REPO)
    from manifests import iter_rows, validate_manifest

    start = time.perf_counter()
    if phase in ("validate", "validate+files"):
        rows, problems = validate_manifest(
            manifest, batch_rows=batch_rows, check_images_exist=phase == "validate+files"
        )
        if problems:
            raise SystemExit(f"benchmark manifest has problems: {problems[:3]}")
    elif phase == "iterate":
        rows = sum(len(batch) for batch in iter_rows(manifest, batch_rows=batch_rows))
    wall = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"phase": phase, "rows": rows, "wall_s": wall, "peak_rss_mb": peak_mb}


def _child(phase: str, manifest: str, batch_rows: int) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", phase, manifest]
    cmd += ["--batch-rows", str(batch_rows)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=8192)
    parser.add_argument("--child", nargs=2, metavar=("PHASE", "MANIFEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_phase(args.child[0], args.child[1], args.batch_rows)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-manifest-") as tmp:
        sizes = {"baseline": max(1, args.rows // 10), "manifest": args.rows}
        paths = {}
        for label, rows in sizes.items():
            paths[label] = os.path.join(tmp, label, "manifest.parquet")
            wrote = _child(f"write:{rows}", paths[label], args.batch_rows)
            size_mb = os.path.getsize(paths[label]) / 2**20
            print(f"wrote {label}: {rows} rows, {size_mb:.1f} MiB, {wrote['wall_s']:.1f} s")
        print(
            f"\n{'phase':<16}{'rows':>10}{'wall s':>9}{'rows/s':>11}{'peak RSS MiB':>14}"
            f"{'baseline RSS':>14}{'RSS ratio':>11}"
        )
        for phase in PHASES:
            base = _child(phase, paths["baseline"], args.batch_rows)
            big = _child(phase, paths["manifest"], args.batch_rows)
            rate = big["rows"] / big["wall_s"] if big["rows"] else 0.0
            print(
                f"{phase:<16}{big['rows']:>10}{big['wall_s']:>9.2f}{rate:>11.0f}"
                f"{big['peak_rss_mb']:>14.1f}{base['peak_rss_mb']:>14.1f}"
                f"{big['peak_rss_mb'] / base['peak_rss_mb']:>11.2f}"
            )


if __name__ == "__main__":
    main()
