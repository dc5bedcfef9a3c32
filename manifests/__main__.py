"""Command line: ``python -m manifests validate|build ...`` (the same commands as
``kontext-batch manifest validate|build``, which add_commands registers). Exit 0 when fine,
2 on problems."""

from __future__ import annotations

import argparse
import sys

from .build import build_manifest
from .problems import ManifestError, format_problems
from .validate import validate_manifest

VALIDATE_DESCRIPTION = (
    "Check a manifest before any model loads and list every problem (row, column, reason): "
    "missing or mistyped columns, empty instructions, bad seeds, image paths outside the "
    "allowed folders, ... Image files are opened only with --check-images: without it a "
    "missing image is found when the run reaches its row (which then fails alone). "
    "Exit 0 when fine, 2 listing the problems.")
BUILD_DESCRIPTION = (
    "Every product of the catalog gets every variant, each with --seeds seeds. Instructions "
    "are the variants' templates filled from product fields (e.g. 'place the {product} on "
    "{backdrop}'); seeds and row ids (<product>--<variant>--<k>) depend only on (product, "
    "variant, k), so rebuilding after adding products keeps every existing row and its cache "
    "key. A product with a problem (no id, no image reference, an empty field a template "
    "needs) is skipped with a warning; a missing image file is written as given (its rows fail "
    "alone in the run). Exit 0 when written, 2 listing every problem (duplicate products, "
    "unknown template fields, no rows, ...) otherwise.")
SEEDS_ALIAS = "--seeds-per-variant"  # the old spelling of --seeds, still accepted


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Register ``validate`` and ``build`` on a subparsers action (``python -m manifests``
    and ``kontext-batch manifest`` both use these, so they take the same options)."""
    check = commands.add_parser("validate", help="check a manifest and list every problem",
                                description=VALIDATE_DESCRIPTION)
    check.add_argument("manifest", metavar="MANIFEST", help="the manifest (.parquet)")
    check.add_argument(
        "--image-root", action="append", default=[], metavar="DIR",
        help="extra folder (or URI prefix) images may live in (repeatable); the manifest's "
             "folder is always allowed")
    check.add_argument("--check-images", action="store_true",
                       help="also check that every local image file exists (reads the "
                            "folders; without it missing images are not reported)")
    check.set_defaults(func=validate_command, command_prog=check.prog)

    build = commands.add_parser("build", help="write catalog × variants × seeds as a manifest",
                                description=BUILD_DESCRIPTION)
    build.add_argument("--catalog", required=True, metavar="DIR|CSV|PARQUET",
                       help="folder of images (product id = file stem) or a table with "
                            "product_id, image and any descriptive columns")
    build.add_argument("--variants", required=True, metavar="YAML", help="variants file")
    # Plain ints: the builder refuses 0 or less with its own message (exit 2).
    build.add_argument("--seeds", type=int, metavar="N",
                       help="seeds per (product, variant) (default 1)")
    build.add_argument(SEEDS_ALIAS, dest="seeds_alias", type=int,
                       help=argparse.SUPPRESS)
    build.add_argument("-o", "--out", required=True, metavar="MANIFEST",
                       help="manifest to write (.parquet); replaced only by a complete one")
    build.set_defaults(func=build_command, command_prog=build.prog)


def validate_command(args: argparse.Namespace) -> int:
    rows, problems = validate_manifest(
        args.manifest, image_roots=args.image_root, check_images_exist=args.check_images)
    if problems:
        print(format_problems(problems, f"{args.manifest}: {len(problems)} problem(s)"),
              file=sys.stderr)
        return 2
    checked = "" if args.check_images else " (image files not opened: add --check-images)"
    print(f"{args.manifest}: {rows} rows, no problems{checked}")
    return 0


def _seeds(args: argparse.Namespace) -> int | None:
    """--seeds, or the deprecated spelling (a note says so); None when both disagree."""
    if args.seeds_alias is None:
        return 1 if args.seeds is None else args.seeds
    print(f"{args.command_prog}: note: {SEEDS_ALIAS} is deprecated; use --seeds",
          file=sys.stderr)
    if args.seeds is not None and args.seeds != args.seeds_alias:
        print(f"{args.command_prog}: error: --seeds {args.seeds} and {SEEDS_ALIAS} "
              f"{args.seeds_alias} disagree; give --seeds only", file=sys.stderr)
        return None
    return args.seeds_alias


def build_command(args: argparse.Namespace) -> int:
    seeds = _seeds(args)
    if seeds is None:
        return 2
    try:
        rows = build_manifest(args.catalog, args.variants, seeds, out=args.out)
    except ManifestError as err:  # BuildError included
        print(f"{args.command_prog}: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {rows} rows")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m manifests", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(commands)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
