"""``kontext-batch review``, ``publish`` and ``redo`` (registered by pipeline.cli)."""

from __future__ import annotations

import argparse
import sys

REVIEW_DESCRIPTION = """\
Serve a run's review page from a local server and record decisions: approve, reject (with an
optional note) or redo, per row or in bulk (every row of a product, a variant, or the filtered
set). The server listens on 127.0.0.1 only, on a random free port, and needs the token in the
URL it prints; Ctrl-C stops it.

Decisions are appended to OUT/decisions.jsonl (beside OUT/store and OUT/runs; one JSON line each,
fsync'd, with the reviewer and a timestamp) and keyed by the output's cache key: an image
approved today stays approved when a later run gets it as a cache hit. `review JOB --date D`
opens a night's run: new images wait for review, carried ones show their earlier decisions.

Keys on the page: j/k next/previous, a approve, r reject, d redo, z zoom, Esc close.
Exit codes: 0 stopped with Ctrl-C, 2 no such run or a bad option.
"""

PUBLISH_DESCRIPTION = """\
Write a run's approved images (every done image with --all-done, for runs nobody reviewed;
rejected and redo images are never published) to a folder or a pyarrow filesystem URI as
<product_id>/<variant>[-<k>].<ext>, plus feed.csv (Shopify product-CSV image rows: Handle,
Image Src, Image Position, Image Alt Text) and published.json (row id, cache key, sha256,
source, instruction, seed, decision, reviewer per image).

Publishing again writes nothing new. A different file already at a target path is refused
(nothing is written) unless --overwrite. Product ids and variants must be plain names (no
'..', '/', absolute paths or control characters). Each publish that wrote something is
recorded in the run's ledger.

Exit codes: 0 published (or nothing new), 2 refused: no such run, unsafe names, a clash at the
target, an unwritable target.
"""

REDO_DESCRIPTION = """\
Make the rejected images of a run again and bring them back to its review. Every product x
variant image whose review ended without an approval (its last decision reject or redo, and no
candidate of an earlier redo approved or still waiting) gets new rows: --seeds N new seeds
(default 1), or with --instruction-from note the reviewer's note as the corrected instruction
(the original seed; new seeds too with --seeds).

The rows are written to RUN_DIR/redo/<n>.parquet and run with the run's settings into the same
OUT (same store, same decisions log). Their outputs then show in `kontext-batch review RUN_DIR`
as candidates for the same product and variant ("redo of <row>"), and `publish` writes the
approved one under that product's and variant's name.

Exit codes: 0 done (or nothing to redo), 1 some follow-up rows failed, 2 refused: no such run,
a run in progress, rejected images without a note for --instruction-from note.
"""


def add_review_commands(subparsers) -> None:
    """Register ``review`` and ``publish`` on the top-level parser's subparsers."""
    review = subparsers.add_parser(
        "review", help="serve a run's review page and record approve/reject/redo decisions",
        description=REVIEW_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _where(review)
    review.add_argument("--reviewer", metavar="NAME",
                        help="name recorded with each decision (default: the OS user)")
    review.add_argument("--port", type=int, default=0, metavar="N",
                        help="port on 127.0.0.1 (default: a random free one)")
    review.set_defaults(func=review_command)

    publish = subparsers.add_parser(
        "publish", help="write a run's approved images, feed.csv and published.json",
        description=PUBLISH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _where(publish)
    publish.add_argument("--to", required=True, metavar="DIR|URI",
                         help="target folder or pyarrow filesystem URI (s3://bucket/prefix)")
    publish.add_argument("--all-done", action="store_true",
                         help="publish every done image without a decision too (runs without review)")
    publish.add_argument("--all-steps", action="store_true",
                         help="of a chain of edits (image row:<row_id>), publish every step, "
                              "not only the final one")
    publish.add_argument("--overwrite", action="store_true",
                         help="replace different files already at the target paths")
    publish.add_argument("--base-url", metavar="URL",
                         help="prefix for feed.csv's Image Src (where the target is served "
                              "from, e.g. https://cdn.example.com/catalog); default: relative paths")
    publish.set_defaults(func=publish_command)

    redo = subparsers.add_parser(
        "redo", help="run a run's rejected images again (new seeds or the reviewer's corrected "
                     "instruction); the results come back to its review",
        description=REDO_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    _where(redo)
    redo.add_argument("--seeds", type=int, metavar="N",
                      help="new seeds per rejected image (default 1; 1-100)")
    redo.add_argument("--instruction-from", choices=["note"], metavar="note",
                      help="use the reviewer's note on the reject/redo decision as the instruction")
    redo.add_argument("--address", metavar="ADDR", help="Ray cluster to join (default: the run's)")
    redo.add_argument("--quiet", action="store_true", help="no progress bars")
    redo.set_defaults(func=redo_command)


def _where(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN_DIR|JOB", help="a run folder (OUT/runs/<run_id>) or, "
                                                      "with --date, a job name or spec file")
    p.add_argument("--date", metavar="YYYY-MM-DD", help="the job's night to use")
    p.add_argument("--jobs-dir", metavar="DIR", help="folder holding job specs")


def review_command(args: argparse.Namespace) -> int:
    from .decisions import DecisionError, check_reviewer, default_reviewer
    from .runs import RunNotFound, resolve_target
    from .server import serve
    from .service import ReviewSession

    try:
        reviewer = check_reviewer(args.reviewer if args.reviewer is not None else default_reviewer())
        if not 0 <= args.port <= 65535:
            raise DecisionError(f"--port {args.port} is not a port; give 1-65535, or leave it out")
        session = ReviewSession(resolve_target(args.run, args.date, args.jobs_dir), reviewer)
        return serve(session, args.port)
    except (RunNotFound, DecisionError) as exc:
        print(f"kontext-batch review: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"kontext-batch review: error: cannot listen on 127.0.0.1:{args.port} "
              f"({exc.strerror or exc}); leave --port out for a free one", file=sys.stderr)
        return 2


def publish_command(args: argparse.Namespace) -> int:
    from pipeline.publish import PublishError, publish

    from .runs import RunNotFound, resolve_target

    try:
        result = publish(resolve_target(args.run, args.date, args.jobs_dir), args.to,
                         all_done=args.all_done, overwrite=args.overwrite, base_url=args.base_url,
                         all_steps=args.all_steps)
    except (RunNotFound, PublishError) as exc:
        print(f"kontext-batch publish: error: {exc}", file=sys.stderr)
        return 2
    if not result.wrote_anything:
        print(f"published to {args.to}: nothing new ({len(result.unchanged)} images already there)")
    else:
        print(f"published to {args.to}: {len(result.written)} new, {len(result.overwritten)} "
              f"replaced, {len(result.unchanged)} unchanged; "
              f"{', '.join(result.index_written) or 'feed.csv and published.json unchanged'}")
    return 0


def redo_command(args: argparse.Namespace) -> int:
    from pipeline.errors import ConfigError
    from pipeline.redo import RedoError, redo
    from pipeline.runner import print_summary

    from .runs import RunNotFound, resolve_target

    overrides = {"progress": not args.quiet}
    if args.address:
        overrides["address"] = args.address
    try:
        target = resolve_target(args.run, args.date, args.jobs_dir)
        plan, summary = redo(target, seeds=args.seeds, instruction_from=args.instruction_from,
                             **overrides)
    except (RunNotFound, RedoError, ConfigError) as exc:
        print(f"kontext-batch redo: error: {exc}", file=sys.stderr)
        return 2
    left = f"{plan.waiting} still waiting for review, {plan.approved} approved"
    if summary is None:
        print(f"nothing to redo in run {target.run_id}: no image ended its review rejected "
              f"({left})")
        return 0
    print_summary(summary, resume="run the same command again")
    where = f"{args.run} --date {args.date}" if args.date else str(target.run_dir)
    carried = (f"; {plan.carriers} parent step(s) of chained rows carried as cache hits"
               if plan.carriers else "")
    print(f"redo: {plan.new_images} new image(s) for {plan.slots} rejected product x variant "
          f"image(s) ({left}{carried}); review them with: kontext-batch review {where}")
    return summary.exit_code
