"""Time the review build of a 500-row run: report, heat maps, thumbnails, contact sheets, page.

    .venv/bin/python benchmarks/bench_reports.py [--rows 500] [--size 1024] [--format png]

Builds a synthetic run directory (not timed; sources and outputs with photo-like grain so they
compress and decode like real images), then times `generate_reports` on it and prints the
seconds, split into the report alone and the whole build. The issue's target for 500 rows is
under 30 s on the 2-core development machine; this prints, it does not assert.

Reports at scale (a nightly re-run that mostly hits the cache):

    .venv/bin/python benchmarks/bench_reports.py --scale 20000 100000 [--before 1254e56]

builds a run of each size with 95 % cache hits (synthetic_runs.make_large_run, 64 px images) and
prints, per size, the seconds and peak memory of the report alone and of the whole build with the
review page: each in a fresh process, peak RSS (VmHWM, reset after the imports) and its growth
over the RSS right after the imports. With --before REF, the reports package of that git commit is timed
on the same folders (its whole build only up to --before-review-rows rows: it decodes every row).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))  # synthetic_runs: a test fixture

from synthetic_runs import make_synthetic_run  # noqa: E402

from pipeline.reports import generate_reports  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process, from /proc/self/status."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Start the peak (VmHWM) again from the current RSS (Linux 4.0+), so import spikes do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure_in_this_process(package: str, run_dir: str, review: bool) -> dict[str, float]:
    """One report build by `package` (pipeline.reports, or an older copy): seconds and memory."""
    import importlib
    import importlib.util

    reports = importlib.import_module(package)
    # the review's imports (PIL, numpy) in the baseline; commits before the reports tidy (52aeba3) call it build
    build = "review_build" if importlib.util.find_spec(package + ".review_build") else "build"
    importlib.import_module(f"{package}.{build}")
    reset = _reset_peak()
    baseline = _status_mib("VmRSS")
    t0 = time.perf_counter()
    reports.generate_reports(run_dir, review=review, progress=False)
    seconds = time.perf_counter() - t0
    peak = _status_mib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    thumbs = Path(run_dir) / "review" / "thumbs"
    return {"seconds": seconds, "peak_mib": peak, "growth_mib": peak - baseline,
            "thumbnails": len(list(thumbs.iterdir())) if review and thumbs.exists() else 0}


def measure(package: str, run_dir: Path, review: bool, extra_path: Path | None = None) -> dict[str, float]:
    """measure_in_this_process in a fresh interpreter, so each peak is its own."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(p) for p in (extra_path, ROOT) if p))
    job = json.dumps({"package": package, "run_dir": str(run_dir), "review": review})
    done = subprocess.run([sys.executable, __file__, "--measure", job], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {package} on {run_dir} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extract_package(ref: str, into: Path) -> Path:
    """pipeline/reports as of git `ref`, importable as `reports_before` from `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "pipeline/reports"], check=True,
                             capture_output=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    shutil.move(str(into / "pipeline" / "reports"), str(into / "reports_before"))
    return into


def scale(args: argparse.Namespace) -> int:
    from synthetic_runs import make_large_run

    from pipeline.reports.pricing import load_pricing

    prices = load_pricing().to_dict()  # frozen into config.json, as the runner does

    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory(prefix="bench-reports-scale-") as tmp:
        before = extract_package(args.before, Path(tmp) / "before") if args.before else None
        if before is not None:
            print(f"before: pipeline/reports of {args.before}")
        print(f"{'rows':>8} {'code':<7} {'build':<14} {'seconds':>8} {'peak MiB':>9} {'growth MiB':>11} {'thumbs':>7}")
        for rows in args.scale:
            t0 = time.perf_counter()
            run = make_large_run(Path(tmp) / f"out-{rows}", rows=rows, generated_every=20, failed_every=1000,
                                 pricing=prices)
            ledger_mib = (run.run_dir / "ledger.jsonl").stat().st_size / 2**20
            print(f"# {rows} rows, 95% cache hits, ledger {ledger_mib:.1f} MiB, set-up "
                  f"{time.perf_counter() - t0:.0f} s (not counted)", flush=True)
            cases = [("after", "pipeline.reports", None)]
            if before is not None:
                cases.append(("before", "reports_before", before))
            for label, package, path in cases:
                for review in (False, True):
                    if review and label == "before" and rows > args.before_review_rows:
                        print(f"{rows:>8} {label:<7} {'report+review':<14} {'(skipped: decodes every row)':>30}")
                        continue
                    m = measure(package, run.run_dir, review, path)
                    what = "report+review" if review else "report only"
                    print(f"{rows:>8} {label:<7} {what:<14} {m['seconds']:>8.1f} {m['peak_mib']:>9.0f} "
                          f"{m['growth_mib']:>11.0f} {m['thumbnails']:>7}", flush=True)
            shutil.rmtree(run.out_root, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, nargs="+", metavar="ROWS",
                        help="reports-at-scale mode: run sizes (95%% cache hits), e.g. 20000 100000")
    parser.add_argument("--before", metavar="REF", help="with --scale: also time pipeline/reports of this git commit")
    parser.add_argument("--before-review-rows", type=int, default=20000, metavar="N",
                        help="with --before: time the old whole build only up to N rows (default 20000)")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--variants", type=int, default=10, help="variants per product (rows per sheet)")
    parser.add_argument("--size", type=int, default=1024, help="source/output side in pixels")
    parser.add_argument("--format", choices=("png", "jpeg", "webp"), default="png")
    parser.add_argument("--grain", type=float, default=6.0, help="noise std (0..255) for photo-like files")
    args = parser.parse_args()
    if args.measure:
        job = json.loads(args.measure)
        print(json.dumps(measure_in_this_process(job["package"], job["run_dir"], job["review"])))
        return 0
    if args.scale:
        return scale(args)
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
