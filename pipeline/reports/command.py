"""The `report` subcommand: `kontext-batch report RUN_DIR [--verify]`.

Exit codes: 0 ok; 1 --verify found a figure, hash, rendering or output that differs; 2 usage or
input error (including a store that cannot be opened for --verify).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .bindings import LEVELS, OutputCheck, StoreUnreachable
from .changes import ReviewThresholds
from .ledger import LedgerError
from .pricing import PricingError, load_pricing
from .report_doc import report_json_bytes
from .report_render import report_markdown
from .rows import DEFAULT_MAX_REVIEW_ROWS
from .sheets import SheetLayout
from .verify import VerifyResult, verify_run
from .write_all import generate_reports, run_thresholds

MAX_SHOWN_PROBLEMS = 50  # output problems printed; the rest are counted

DESCRIPTION = """\
Recompute a run's cost/usage report from its ledger and write report.json (for machines),
report.md and report.html (for people), contact sheets (sheets/) and the review page
(review.html; open it in a browser, no server needed). The review covers the rows generated or
failed in this run (at most --max-review-rows); cache hits are counted, not shown: they were
reviewed in the run that generated them. With --verify, write nothing: compare
the stored report.json with figures recomputed from ledger.jsonl (priced with the run's frozen
prices), check that ledger.jsonl is the one report.json was built from (its sha256), that
report.md and report.html say what report.json says, and that every ok or cache-hit attempt is
bound to its output in the store (object present, sha256 as its sidecar records, key,
instruction, seed as the sidecar records, key recomputed from the source where it is readable);
exit 1 naming every record, field and both values that differ."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `report` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "report", help="cost/usage report, contact sheets and review page of a run",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run_command)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ReviewThresholds()
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run's folder: OUT/runs/<run_id>")
    parser.add_argument("--verify", action="store_true",
                        help="recompute from the ledger and compare with the stored report.json; "
                             "exit 1 naming each figure, hash, rendering or output that differs")
    parser.add_argument("--store", metavar="ROOT",
                        help="with --verify: the store to check the outputs in, when it is no longer "
                             "where the ledger's output_uri says (a moved store or an archived copy)")
    parser.add_argument("--outputs", choices=LEVELS, default="full",
                        help="with --verify: full (default) binds each output to the store and recomputes "
                             "its key from the source where readable; stored skips the recomputation "
                             "(sources changed since the run); none checks the report against the ledger only")
    parser.add_argument("--pricing", metavar="FILE",
                        help="pricing YAML (default: the run's config.json pricing, else pipeline/pricing.yaml)")
    parser.add_argument("--no-review", action="store_true", help="write only report.{json,md,html}")
    parser.add_argument("--max-review-rows", type=row_limit, default=DEFAULT_MAX_REVIEW_ROWS, metavar="N",
                        help="review page and contact sheets show at most N of the rows generated or "
                             "failed in this run, failed rows first (cache hits are never shown, only "
                             f"counted; 0: no limit; default {DEFAULT_MAX_REVIEW_ROWS})")
    parser.add_argument("--print", dest="print_format", choices=("md", "json", "none"), default="md",
                        help="what to print on stdout (default: md)")
    parser.add_argument("--sheet-format", choices=("png", "jpeg"), default="png", help="contact sheet format")
    parser.add_argument("--unchanged-threshold", type=float, metavar="X",
                        help=f"flag 'unchanged' below this mean |output - source| in 0..1 "
                             f"(default {defaults.unchanged_mean_diff})")
    parser.add_argument("--spread-threshold", type=float, metavar="X",
                        help=f"flag 'spread' above this fraction of changed pixels (default {defaults.spread_fraction})")
    parser.add_argument("--changed-pixel", type=float, metavar="X",
                        help=f"a pixel counts as changed above this difference (default {defaults.changed_pixel})")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def row_limit(text: str) -> int:
    """argparse type of --max-review-rows (here and on `kontext-batch run`)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a row count; pass a whole number >= 0 (0: no limit)")
    return value


def _verify(args: argparse.Namespace) -> int:
    result = verify_run(args.run_dir, pricing=load_pricing(args.pricing) if args.pricing else None,
                        store=args.store, outputs=args.outputs)
    if result.ledger_changed:
        print(f"ledger.jsonl changed since report.json was written (sha256 {result.stored_sha256} "
              f"then, {result.recomputed_sha256} now): the report does not describe this ledger; "
              f"rewrite it with `kontext-batch report {args.run_dir}` if the change is legitimate",
              file=sys.stderr)
    if result.pricing_differs and result.differences:
        print(pricing_mismatch_text(args.run_dir, result.stored_pricing_origin, result.pricing_origin,
                                    len(result.differences)))
    elif result.differences:
        print(f"report.json disagrees with ledger.jsonl in {args.run_dir}: {len(result.differences)} "
              "figure(s) or note(s) differ")
        for difference in result.differences:
            print(f"  {difference}")
    else:
        print(f"report.json agrees with ledger.jsonl in {args.run_dir}")
    _print_renderings(result)
    if result.outputs is not None:
        _print_outputs(result.outputs)
    if result.ok:
        return 0
    print(f"verify failed for {args.run_dir}: {_failure_summary(result)}")
    return 1


def _print_renderings(result: VerifyResult) -> None:
    if not result.renderings:
        print("report.md and report.html say what report.json says")
        return
    print("report.md or report.html does not say what report.json says (rewrite them with "
          "`kontext-batch report RUN_DIR`):")
    for line in result.renderings:
        print(f"  {line}")


def _print_outputs(check: OutputCheck) -> None:
    origin = "given with --store" if check.store_given else "named by the ledger's output_uri"
    where = f"store {check.store} ({origin})" if check.store else "no store (no ok or cache-hit attempt)"
    rekeyed = (f"{check.rekeyed} key(s) recomputed from their sources" if check.level == "full"
               else "keys not recomputed (--outputs stored)")
    print(f"outputs: {check.attempts} ok/cache-hit attempt(s) checked against {check.objects} object(s) in "
          f"{where}; {rekeyed}")
    for reason, count in sorted(check.not_rekeyed.items()):
        print(f"  note: {count} key(s) not recomputed: {reason}")
    if not check.problem_count:
        return
    print(f"outputs: {check.problem_count} problem(s) binding ledger.jsonl to the store:")
    for problem in check.problems[:MAX_SHOWN_PROBLEMS]:
        print(f"  {problem}")
    if check.problem_count > MAX_SHOWN_PROBLEMS:
        print(f"  ... and {check.problem_count - MAX_SHOWN_PROBLEMS} more")
    if any(p.field == "key" and p.expected.startswith("recomputed") for p in check.problems):
        print("  (a recomputed key differs when the ledger's key, instruction or seed was changed, or the "
              "source image changed since the run; if the sources changed, check the other bindings "
              "with --outputs stored)")


def _failure_summary(result: VerifyResult) -> str:
    parts = []
    if result.differences:
        parts.append(f"{len(result.differences)} figure(s) or note(s) differ")
    if result.ledger_changed:
        parts.append("ledger.jsonl is not the one report.json was built from (sha256 differs)")
    if result.renderings:
        parts.append(f"{len(result.renderings)} rendering(s) differ from report.json")
    if result.outputs is not None and result.outputs.problem_count:
        parts.append(f"{result.outputs.problem_count} output binding problem(s)")
    return "; ".join(parts)


def pricing_mismatch_text(run_dir: str, stored: str | None, now: str | None, differences: int) -> str:
    """Why a report priced from another source than this check cannot be verified, and the fix."""
    stored_is_file = stored is not None and not stored.endswith("(pricing)") and Path(stored).is_file()
    if stored_is_file:
        fix = f"verify it with the same prices: kontext-batch report {run_dir} --verify --pricing {stored}"
    elif stored is not None and stored.endswith("(pricing)"):
        fix = f"verify it with the run's own frozen prices: kontext-batch report {run_dir} --verify (no --pricing)"
    else:
        fix = (f"pass the pricing file it was written with (--pricing FILE), or rewrite it with "
               f"`kontext-batch report {run_dir}`")
    return (f"report.json in {run_dir} was written with the prices from {stored}, but this check "
            f"priced the ledger with {now}: its cost figures cannot agree ({differences} figure(s) "
            f"differ), whatever the ledger says; {fix}")


def run_command(args: argparse.Namespace) -> int:
    """Handle parsed `report` arguments; returns the exit code."""
    run_dir = Path(args.run_dir)
    try:
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {run_dir} does not exist; pass OUT/runs/<run_id>")
        if args.verify:
            return _verify(args)
        thresholds = run_thresholds(run_dir, {
            "unchanged_mean_diff": args.unchanged_threshold, "spread_fraction": args.spread_threshold,
            "changed_pixel": args.changed_pixel})
        outputs = generate_reports(run_dir, pricing=args.pricing, thresholds=thresholds,
                                   layout=SheetLayout(format=args.sheet_format), review=not args.no_review,
                                   progress=not args.quiet, max_review_rows=args.max_review_rows)
    except (FileNotFoundError, LedgerError, PricingError, StoreUnreachable, ValueError) as exc:
        print(f"kontext-batch report: {exc}", file=sys.stderr)
        return 2
    if args.print_format == "md":
        sys.stdout.write(report_markdown(outputs.report))
    elif args.print_format == "json":
        sys.stdout.buffer.write(report_json_bytes(outputs.report))
        sys.stdout.flush()
    written = [*outputs.files.values(), *([outputs.review_page] if outputs.review_page else [])]
    print("wrote " + ", ".join(str(p) for p in written)
          + (f" and {len(outputs.sheets)} contact sheet(s)" if outputs.review_page else ""), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (python -m pipeline.reports RUN_DIR ...)."""
    parser = argparse.ArgumentParser(prog="kontext-batch report", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_command(parser.parse_args(argv))
