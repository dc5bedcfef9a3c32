"""``kontext-batch``: run a manifest of image edits on Ray, or report on a finished run.

Exit codes (0 ok, 1 failed rows, 2 usage/config error, 130/143 interrupted) are described in
full in docs/architecture.md, section 7. ``run --json`` prints one JSON object on stdout when
the run ends (summary_document).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.cli_parser import HintingParser
from pipeline.cluster import after_ray_init

# Commands of the ``kontext-batch`` entry point (jobs.cli) that it handles before this parser.
OTHER_COMMANDS = ("job",)

RUN_DESCRIPTION = """\
Edit every row of a Parquet manifest (image, instruction, seed, ...) with a FLUX.1 Kontext
model on Ray actors, and write the outputs, a results table and a cost/usage report.
How a run works, step by step, with the cache key, resume and exit codes in full:
docs/architecture.md.

Cache: an output is stored under a key hashed from every input that changes its pixels
(source bytes, instruction, seed, weights, steps, guidance, size, precision, fast-path
options, output encoding); a row computed before is a cache hit and never reaches a model.

Resume: after a crash, Ctrl-C or SIGTERM the same command continues the same run; tries
already spent count against --max-attempts. A finished run's command starts a new run
(id -2, -3, ...) whose done rows are cache hits and whose failed rows are tried afresh.

Failures: a row with a bad input (unreadable or missing image, empty instruction, negative
seed, an image above --max-pixels, ...) fails alone with its reason and the rest run;
transient errors are retried. A problem with the whole manifest file, the model or a flag
stops before any work. A full store or run folder stops the run; it resumes once there is
space.

Images: relative paths resolve against the manifest's folder, and a local image must lie
inside it (after `..` and symlinks) or inside a folder given with --image-root; remote images
(s3://, gs://, ...) only under a URI prefix given with --image-root, never over http. EXIF
orientation, first frames and flattened transparency are noted in the results' `notes`,
instructions cut at the text encoder's limit in `truncated`.

Manifest values win over flags: --steps, --guidance and --output-format fill in rows that
leave those columns empty; otherwise the model preset's defaults apply.

Written under OUT (default ./runs):
  OUT/store/objects/<key[:2]>/<key>.<ext>   outputs (+ .json sidecar), shared by all runs
  OUT/runs/<run_id>/results.parquet         one row per manifest row: status, output, reason
  OUT/runs/<run_id>/ledger.jsonl            every attempt (the audit trail reports use)
  OUT/runs/<run_id>/report.md|html|json     cost/usage report
  OUT/runs/<run_id>/review.html, sheets/    review page and contact sheets

Exit codes: 0 ok, 1 finished with failed rows (or stopped resumably), 2 usage/config error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM). With --json, stdout holds one JSON object
when the run ends (run_id, status, exit_code, counts, paths); the summary for people goes to
stderr.

Examples:
  kontext-batch run --demo
  kontext-batch run catalog.parquet --out runs --batch-size 4
  kontext-batch run catalog.parquet --address ray://head:10001 --device cuda
  kontext-batch manifest validate catalog.parquet --check-images   # before a long run
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _run_id(text: str) -> str:
    from pipeline.run_ids import RULE, run_id_problem

    problem = run_id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} is not usable as a run id: {problem}; {RULE}")
    return text


def add_run_parser(subparsers) -> argparse.ArgumentParser:
    from manifests import limits
    from pipeline.image_io import DEFAULT_MAX_PIXELS
    from pipeline.reports.command import row_limit
    from pipeline.run_config import RunConfig
    from pipeline.runner import DEMO_MANIFEST

    d = RunConfig(manifest="")  # the flags' defaults are the library's

    p = subparsers.add_parser(
        "run", help="run a manifest of edits (or --demo)", description=RUN_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest", nargs="?", metavar="MANIFEST",
                   help="the manifest: a Parquet file with columns image, instruction, seed "
                        "(optional ones: README.md, section Manifests); check one first with "
                        "`kontext-batch manifest validate MANIFEST --check-images`")
    p.add_argument("--demo", action="store_true",
                   help=f"run the shipped demo manifest ({DEMO_MANIFEST.relative_to(DEMO_MANIFEST.parents[3])})")
    p.add_argument("--out", default=d.out, metavar="DIR",
                   help=f"local folder for the store and run folders (default: {d.out})")
    p.add_argument("--store", metavar="URI",
                   help="put the output store elsewhere: a folder or a pyarrow filesystem URI "
                        "such as s3://bucket/prefix (default: OUT/store)")
    p.add_argument("--model", default=d.model,
                   help=f"preset name or folder of downloaded weights (default: {d.model})")
    p.add_argument("--address", metavar="ADDR",
                   help="join a running Ray cluster: 'auto' (the one started on this machine "
                        "with `ray start`), ray://HOST:10001, or HOST:6379. Default: start a "
                        "local Ray for this run")
    p.add_argument("--device", choices=limits.DEVICES, default=d.device,
                   help="auto: CUDA when the cluster has GPUs (one actor per GPU), else CPU")
    p.add_argument("--dtype", choices=("auto", *limits.DTYPES),
                   default=d.dtype, help="precision (auto: bfloat16 on CUDA, float32 on CPU); "
                                        "part of the cache key")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size, metavar="N",
                   help="rows per model call (halved automatically, for that image size only, on "
                        "CUDA out-of-memory)")
    p.add_argument("--actors", type=_positive_int, metavar="N",
                   help="model actors (default: one per GPU; one on CPU-only clusters)")
    p.add_argument("--steps", type=_positive_int, metavar="N",
                   help="sampling steps for rows without a steps value (default: preset's)")
    p.add_argument("--guidance", type=float, metavar="G",
                   help="guidance for rows without a guidance value (default: preset's)")
    p.add_argument("--output-format", choices=limits.OUTPUT_FORMATS, default=d.output_format,
                   help="file format for rows without an output_format value")
    p.add_argument("--run-id", metavar="ID", type=_run_id,
                   help="use (or resume) this run id instead of the one derived from the "
                        "manifest and settings: the name of its folder under OUT/runs "
                        "(letters, digits, '.', '_', '-')")
    p.add_argument("--max-attempts", type=_positive_int, default=d.max_attempts, metavar="N",
                   help="tries per row for transient and device errors, over all invocations "
                        f"of a run (default: {d.max_attempts})")
    p.add_argument("--image-root", action="append", default=[], metavar="DIR",
                   help="a folder local images may live in besides the manifest's own, or a "
                        "URI prefix remote images may be read from (s3://bucket/photos/); "
                        "repeatable. Images elsewhere fail their row")
    p.add_argument("--step-cache", type=float, default=None, metavar="THRESHOLD",
                   help="fast path (approximate, opt-in): reuse the transformer's later blocks "
                        "between sampling steps while the first block's output changes less than "
                        "THRESHOLD (relative; e.g. 0.1). Part of the cache key. Default: exact")
    p.add_argument("--fp8", action="store_true",
                   help="fast path (approximate, opt-in): fp8 row-wise matmuls in the transformer's "
                        "blocks (GPUs with compute capability 8.9+, e.g. L40S/H100/H200; emulated "
                        "and slower on CPU). Part of the cache key. Default: exact")
    p.add_argument("--compile", action="store_true",
                   help="exact path (opt-in): fused RoPE and torch.compile of each transformer "
                        "block in every actor. The first batch of each new shape compiles (minutes "
                        "at full size); compiled kernels are cached on disk ($KONTEXT_COMPILE_CACHE, "
                        "default ~/.cache/kontext-batch/torch-compile) so other actors and later runs "
                        "load them. Pays on GPUs; same pixels up to rounding, so cached outputs stay "
                        "valid. Default: eager")
    p.add_argument("--memory", default=d.memory, metavar="auto|80GB|24GB|16GB|12GB",
                   help="device memory to plan the model's weights for (auto: the GPU's own): "
                        "picks the first memory plan that fits (resident, model-offload, "
                        "partial-offload, fp8, fp8-model-offload, fp8-partial-offload, "
                        "fp8-group-offload) and refuses, before any work, a model no plan fits. "
                        "fp8 storage changes pixels (part of the cache key); offloading does not")
    p.add_argument("--memory-plan", default=None, metavar="PLAN",
                   help="use this memory plan (resident, model-offload, partial-offload, fp8, "
                        "fp8-model-offload, fp8-partial-offload, group-offload, fp8-group-offload), "
                        "checked to fit --memory")
    p.add_argument("--lora", action="append", dest="loras", default=None, metavar="PATH[:SCALE]",
                   help="apply this LoRA adapter (a .safetensors file in the diffusers, kohya, XLabs "
                        "or fal layout; scale default 1) to every row; repeatable. A manifest's lora "
                        "column replaces it for its rows. The file's sha256 and the scale are part of "
                        "the cache key; a missing, non-LoRA or mismatched file stops the run (exit 2)")
    p.add_argument("--lora-mode", choices=("unfused", "fused"), default=d.lora_mode,
                   help="unfused (default): each adapter runs as a low-rank path beside its layer "
                        "(works with fp8 and GGUF weights); fused: added into the weights (no extra "
                        "work per step, plain float weights only). Part of the cache key of rows "
                        "with adapters")
    p.add_argument("--max-pixels", type=_positive_int, default=d.max_pixels,
                   metavar="N", help="refuse source images with more pixels (read from the "
                                     "header, before decoding; default: "
                                     f"{DEFAULT_MAX_PIXELS:_} = 40 MP)")
    p.add_argument("--verify-cache", action="store_true",
                   help="also hash cached outputs on remote stores against their sidecars and "
                        "recompute damaged ones (local stores always are; reads every cached "
                        "file)")
    p.add_argument("--rehash-sources", action="store_true",
                   help="hash every source image again instead of trusting the source-digest "
                        "index (path, size, mtime, ctime, inode), and refresh the index")
    p.add_argument("--dry-run", action="store_true",
                   help="show the plan (rows, cache hits, images to generate, estimated cost "
                        "from this OUT's earlier runs) and stop: no model, no run folder")
    p.add_argument("--no-report", action="store_true",
                   help="skip the report, contact sheets and review page")
    p.add_argument("--max-review-rows", type=row_limit, metavar="N",
                   help="review page and contact sheets show at most N of the rows generated or "
                        "failed in this run (default 2000; 0: all); cache hits are only counted")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars, no Ray start-up lines, no output from the actors "
                        "(it stays in Ray's log files); errors and the summary still print")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object on stdout when the run ends (run_id, status, "
                        "exit_code, counts, paths); the summary for people goes to stderr")
    p.set_defaults(func=run_command)
    return p


class Terminated:
    """Whether SIGTERM arrived during the run."""

    received = False


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[Terminated]:
    """While a run lasts, SIGTERM stops it the way Ctrl-C does: KeyboardInterrupt in the main
    thread, so the run's cleanup writes results.parquet and the run-end record ("interrupted")
    and the run stays resumable. (Unhandled, SIGTERM killed the driver with neither.)

    ``ray.init`` replaces SIGTERM's handler twice, in Python (its local node's: kill Ray, exit 1)
    and in C++ (its core worker's crash handler: log and abort), either of which skips that
    cleanup; so this one is put back after the runner starts or joins Ray
    (``pipeline.cluster.after_ray_init``; the cleanup shuts a local Ray down itself). A SIGTERM
    during Ray's start-up still gets Ray's handling. The previous handler is restored after
    the run."""
    state = Terminated()
    if threading.current_thread() is not threading.main_thread():
        yield state  # only the main thread may set signal handlers
        return

    def on_sigterm(signum: int, frame: object) -> None:
        if state.received:
            return  # a second SIGTERM must not cut the results being written short
        state.received = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with after_ray_init(lambda: signal.signal(signal.SIGTERM, on_sigterm)):
            yield state
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_command(args: argparse.Namespace) -> int:
    from pipeline.cluster import ray_output
    from pipeline.errors import ConfigError, RunFolderFull
    from pipeline.faults import faults_from_env
    from pipeline.run_config import RunConfig
    from pipeline.runner import DEMO_MANIFEST, print_summary, run_batch

    report = _Reporter(args.json)
    if args.demo == bool(args.manifest):
        return report.error("kontext-batch run: give a MANIFEST or --demo (exactly one)", 2)
    manifest = str(DEMO_MANIFEST) if args.demo else args.manifest
    if args.demo and not Path(manifest).is_file():
        return report.error(f"kontext-batch run: the demo manifest {manifest} is missing; "
                            "reinstall the package (make venv) or pass a MANIFEST", 2)
    config = RunConfig.from_args(args, manifest)
    if args.dry_run:
        return _dry_run(config, report, args.json)
    terminated = Terminated()
    try:
        # --json: the actors' output must not reach stdout, which holds the JSON document.
        with sigterm_as_interrupt() as terminated, \
                ray_output(quiet=args.quiet, worker_logs=not (args.quiet or args.json)):
            summary = run_batch(config, faults=faults_from_env())
    except ConfigError as exc:
        return report.error(f"kontext-batch run: error: {exc}", 2)
    except RunFolderFull as exc:
        return report.error(f"kontext-batch run: stopped: {exc}; run the same command again "
                            "to resume", 1, status="stopped")
    except KeyboardInterrupt:
        if terminated.received:
            return report.error("kontext-batch run: terminated (SIGTERM); run the same command "
                                "again to resume", 128 + signal.SIGTERM, status="interrupted")
        return report.error("kontext-batch run: interrupted; run the same command again to "
                            "resume", 130, status="interrupted")
    print_summary(summary, file=sys.stderr if args.json else None,
                  resume="run the same command again")
    if args.json:
        print(json.dumps(summary_document(summary), indent=2, sort_keys=True))
    return summary.exit_code


def _dry_run(config, report: _Reporter, as_json: bool) -> int:
    """``run --dry-run``: the plan a real run would follow, priced by OUT's earlier runs."""
    from dataclasses import asdict

    from pipeline.dry_run import plan_only
    from pipeline.errors import ConfigError

    runs = Path(config.out) / "runs"
    earlier = sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []
    try:
        plan = plan_only(config, basis_runs=earlier)
    except ConfigError as exc:
        return report.error(f"kontext-batch run: error: {exc}", 2)
    if as_json:
        print(json.dumps({"dry_run": True, **asdict(plan), "estimated_cost": plan.estimated_cost},
                         indent=2, sort_keys=True, default=str))
    else:
        print(f"dry run of {config.manifest} (nothing was run or written):")
        print("\n".join(plan.lines()))
    return 0


class _Reporter:
    """How run_command ends without a summary: the message on stderr and, with --json, a
    JSON document on stdout too (so a wrapper always has one to read)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def error(self, message: str, code: int, status: str = "error") -> int:
        print(message, file=sys.stderr)
        if self.as_json:
            print(json.dumps({"status": status, "exit_code": code, "error": message},
                             indent=2, sort_keys=True))
        return code


def summary_document(summary: Any) -> dict[str, Any]:
    """The end-of-run summary as JSON-able data (``run --json``)."""
    return {
        "run_id": summary.run_id, "status": summary.status, "exit_code": summary.exit_code,
        "counts": dict(summary.counts), "run_dir": str(summary.run_dir),
        "results": str(summary.results) if summary.results else None,
        "ledger": str(Path(summary.run_dir) / "ledger.jsonl"), "store": str(summary.store),
        "outputs": f"{summary.store}/objects/", "reports": dict(summary.reports),
        "report_error": summary.report_error, "stop_reason": summary.stop_reason,
    }


def _version() -> str:
    from importlib import metadata

    def of(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return f"kontext-batch {of('kontext-batch')} (ray {of('ray')}, torch {of('torch')})"


def build_parser() -> argparse.ArgumentParser:
    parser = HintingParser(
        prog="kontext-batch", other_commands=OTHER_COMMANDS,
        description="Batch image editing with FLUX.1 Kontext on Ray: manifests in; edited "
                    "images, results, cost reports and review pages out.",
        epilog="Run `kontext-batch run --help` for how runs, caching and resume work.")
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_run_parser(subparsers)
    from pipeline.reports.command import register

    register(subparsers)
    _add_manifest_parser(subparsers)
    from pipeline.review.commands import add_review_commands  # review, publish, redo

    add_review_commands(subparsers)
    return parser


def _add_manifest_parser(subparsers) -> None:
    from manifests.__main__ import add_commands

    manifest = subparsers.add_parser("manifest", help="check a manifest, or build one from a "
                                                      "catalog × variants")
    add_commands(manifest.add_subparsers(dest="manifest_command", metavar="SUBCOMMAND",
                                         required=True))


def main(argv: list[str] | None = None) -> int:
    # Nothing is downloaded at run time. (Ray's token auth is only switched off for the local
    # Ray a run starts, which listens on 127.0.0.1: pipeline.cluster.)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
