"""Command line: ``python -m manifests validate|build ...``. Exit 0 when fine, 2 on problems."""

from __future__ import annotations

import argparse
import sys

from .build import build_manifest
from .problems import ManifestError, format_problems
from .validate import validate_manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m manifests", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("validate", help="check a manifest and list every problem")
    check.add_argument("manifest")
    check.add_argument(
        "--image-root",
        action="append",
        default=[],
        help="extra folder images may live in (repeatable); the manifest's folder is always allowed",
    )
    check.add_argument("--check-images", action="store_true", help="also check local files exist")

    build = commands.add_parser("build", help="write catalog × variants × seeds as a manifest")
    build.add_argument("--catalog", required=True, help="folder of images, or a .csv/.parquet")
    build.add_argument("--variants", required=True, help="variants YAML file")
    build.add_argument("--seeds-per-variant", type=int, default=1)
    build.add_argument("--out", required=True, help="manifest to write (.parquet)")

    args = parser.parse_args(argv)
    if args.command == "validate":
        rows, problems = validate_manifest(
            args.manifest, image_roots=args.image_root, check_images_exist=args.check_images
        )
        if problems:
            print(
                format_problems(problems, f"{args.manifest}: {len(problems)} problem(s)"),
                file=sys.stderr,
            )
            return 2
        print(f"{args.manifest}: {rows} rows, no problems")
        return 0
    try:
        rows = build_manifest(args.catalog, args.variants, args.seeds_per_variant, out=args.out)
    except ManifestError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
