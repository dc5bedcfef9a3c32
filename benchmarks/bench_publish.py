"""Publish of 10,000 local images: seconds for the first publish and for publishing again.

    .venv/bin/python benchmarks/bench_publish.py [--rows 10000]

Builds a synthetic run (synthetic_runs.make_large_run with every row generated: 64 px PNGs with
provenance and a sidecar each; not timed), approves every image in OUT/decisions.jsonl (one
append, as a bulk approve does; not timed), then times pipeline.publish.publish into an empty
local folder (every output read and checked against its sidecar's sha256, written atomically,
feed.csv and published.json) and a second publish into the same folder (nothing new: every file
compared). The issue's target: under 60 s for 10,000 images on the 2-core machine. This prints
figures; it does not assert.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # the helper modules beside this script

from scratch_run import scratch_run  # noqa: E402

from pipeline.publish import publish  # noqa: E402
from pipeline.review.decisions import DecisionLog, decision_record, decisions_path  # noqa: E402
from pipeline.review.runs import load_rows, run_target  # noqa: E402


def sidecars(run_dir: Path) -> None:
    """make_large_run writes no sidecars; publish checks each output against one."""
    import hashlib
    import json

    for row in load_rows(run_dir):
        if row.output_uri:
            out = Path(row.output_uri)
            doc = {"sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
            out.with_suffix(".json").write_text(json.dumps(doc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with scratch_run("bench-publish-", args.rows, generated_every=1, failed_every=args.rows + 1) as (work, run):
        sidecars(run.run_dir)
        target = run_target(run.run_dir)
        rows = [r for r in load_rows(run.run_dir) if r.reviewable]
        DecisionLog(decisions_path(target.out_dir)).append(
            decision_record(r.key or "", "approve", reviewer="bench", row_id=r.row_id, run_id=target.run_id)
            for r in rows)
        print(f"synthetic run: {len(rows):,} approved images built in {time.perf_counter() - start:.1f} s "
              "(not timed below)")
        to = work / "shop"
        start = time.perf_counter()
        first = publish(target, str(to))
        seconds = time.perf_counter() - start
        print(f"first publish: {len(first.written):,} images in {seconds:.1f} s "
              f"({len(first.written) / seconds:,.0f} images/s); target < 60 s")
        start = time.perf_counter()
        again = publish(target, str(to))
        seconds = time.perf_counter() - start
        print(f"publish again: {len(again.unchanged):,} unchanged, {len(again.written)} written "
              f"in {seconds:.1f} s")
    return 0

if __name__ == "__main__":
    sys.exit(main())
