"""Time the review build of a 500-row run: report, heat maps, thumbnails, contact sheets, page.

    .venv/bin/python benchmarks/bench_reports.py [--rows 500] [--size 1024] [--format png]

Builds a synthetic run directory (not timed; sources and outputs with photo-like grain so they
compress and decode like real images), then times `generate_reports` on it and prints the
seconds, split into the report alone and the whole build. The issue's target for 500 rows is
under 30 s on the 2-core development machine; this prints, it does not assert.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipeline.reports import generate_reports  # noqa: E402
from pipeline.reports.synthetic import make_synthetic_run  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--variants", type=int, default=10, help="variants per product (rows per sheet)")
    parser.add_argument("--size", type=int, default=1024, help="source/output side in pixels")
    parser.add_argument("--format", choices=("png", "jpeg", "webp"), default="png")
    parser.add_argument("--grain", type=float, default=6.0, help="noise std (0..255) for photo-like files")
    args = parser.parse_args()
    products = max(1, args.rows // args.variants)
    rows = products * args.variants
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        t0 = time.perf_counter()
        run = make_synthetic_run(
            Path(tmp) / "out", products=products, variants=args.variants, image_size=args.size,
            fmt=args.format, grain=args.grain, actors=4,
            failed=tuple(range(3, rows, 50)), cache_hits=tuple(range(7, rows, 25)),
            retried=tuple(range(11, rows, 40)), unchanged=tuple(range(13, rows, 60)),
            spread=tuple(range(17, rows, 70)))
        setup = time.perf_counter() - t0
        t1 = time.perf_counter()
        generate_reports(run.run_dir, review=False, progress=False)
        report_only = time.perf_counter() - t1
        t2 = time.perf_counter()
        outputs = generate_reports(run.run_dir, progress=False)
        whole = time.perf_counter() - t2
        sheets = len(outputs.sheets)
        heat = len(list((run.run_dir / "review" / "heat").iterdir()))
        page_kb = outputs.review_page.stat().st_size / 1024
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}")
    print(f"run: {rows} rows ({products} products x {args.variants} variants), {args.size}px {args.format}, "
          f"synthetic set-up {setup:.1f} s (not counted)")
    print(f"report only (ledger -> report.json/md/html): {report_only:.2f} s")
    print(f"whole build (report + {heat} heat maps + thumbnails + {sheets} sheets + review.html "
          f"{page_kb:.0f} KiB): {whole:.2f} s  [target < 30 s for 500 rows]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
