"""``kontext-batch review`` and ``kontext-batch publish`` (registered by pipeline.cli)."""

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
    publish.add_argument("--overwrite", action="store_true",
                         help="replace different files already at the target paths")
    publish.add_argument("--base-url", metavar="URL",
                         help="prefix for feed.csv's Image Src (where the target is served "
                              "from, e.g. https://cdn.example.com/catalog); default: relative paths")
    publish.set_defaults(func=publish_command)


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
                         all_done=args.all_done, overwrite=args.overwrite, base_url=args.base_url)
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
