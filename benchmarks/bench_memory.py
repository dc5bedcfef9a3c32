"""Peak device memory and s/image per memory plan, random weights of the published shapes on disk.

    python benchmarks/bench_memory.py --json out.json          # a CUDA GPU: FLUX.1 Kontext [dev] shapes
    python benchmarks/bench_memory.py --shapes tiny --device cpu --steps 2 --size 64 --json out.json

Writes a checkpoint folder (benchmarks/random_checkpoint.py: BFL single files, random bf16,
tensor by tensor so host memory stays bounded) and, for the GGUF plans, Q8_0 / Q4_K copies of its
transformer (benchmarks/gguf_encode.py). Then for each plan it loads the folder the way a run's
editors do, ``load_with_plan(folder, device, plan=..., text=False)`` (no text encoders: the text
phase encodes apart), with random embeddings of T5-XXL / CLIP-L's shapes (512 x 4096, 768), runs
one warm-up edit and one timed edit at --size with --steps, and reports the plan's predicted peak
(``plan_for``), the measured peak (``torch.cuda.max_memory_allocated``, reset per plan; also
split into loading's and the edit's, since a plan may peak while loading), s/image
and both against the resident plan; the issue's targets are printed pass/fail. ``--json`` is
rewritten after every plan, so a run cut short keeps what it measured.

Plans: the memory plans of kontext_core.quant.plans on the bf16 folder, and ``Q8_0:<offload>`` /
``Q4_K:<offload>`` (resident, model-offload, partial-offload, group-offload) on the GGUF folders. A
partial plan streams just enough of the last blocks to fit a card: at the published shapes it is
sized for the card of its target (PARTIAL_MEMORY: bf16 24 GB, fp8/Q8_0 15.5 GB, Q4_K 10 GB). ``--shapes tiny``
runs the same code with the tiny-random preset's shapes on any device; on the CPU there is no
allocator peak, so ``peak_gib`` there is the weight bytes on the device after loading.
Random weights: timings and memory are real, pixels are noise.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helper modules beside this script

import random_checkpoint  # noqa: E402

from kontext_core.config import load_preset  # noqa: E402
from kontext_core.quant.plans import GIB, PLANS  # noqa: E402

GGUF_TYPES = ("Q8_0", "Q4_K")
GGUF_OFFLOADS = ("resident", "model-offload", "partial-offload", "group-offload")
ALL_PLANS = (*PLANS, *(f"{q}:{p}" for q in GGUF_TYPES for p in GGUF_OFFLOADS))
SHAPES = {"published": "flux.1-kontext-dev", "tiny": "tiny-random"}
# The targets: (what, the plans that may meet it, GiB). A target passes when the best
# measured peak among its plans is at most the limit; it is only judged at the published shapes.
TARGETS = (
    ("bf16, text phase apart", ("resident", "model-offload", "partial-offload"), 22.0),
    ("fp8 or Q8_0", ("fp8", "fp8-model-offload", "fp8-partial-offload", "Q8_0:resident", "Q8_0:model-offload",
                     "Q8_0:partial-offload"), 14.0),
    ("Q4_K with offload", ("Q4_K:model-offload", "Q4_K:partial-offload", "Q4_K:group-offload"), 9.0),
)
# The device memory a partial plan is sized for (it streams just enough blocks to fit; on an
# 80+ GB card it would stream none): the card each storage's target is for, so that 90% of it is
# the target (24 GB: the bf16 card; 15.5 GB -> 14 GiB usable; 10 GB -> 9 GiB usable).
PARTIAL_MEMORY = {"bf16": "24GB", "fp8": "15.5GB", "Q8_0": "15.5GB", "Q4_K": "10GB"}


class UsageError(ValueError):
    """A bad flag value (exit 2, before any work)."""


def split_plan(name: str) -> tuple[str, str]:
    """``fp8`` -> ("bf16", "fp8"); ``Q4_K:model-offload`` -> ("Q4_K", "model-offload")."""
    family, _, plan = name.rpartition(":")
    return family or "bf16", plan


def storage_of(name: str) -> str:
    family, plan = split_plan(name)
    return family if family != "bf16" else ("bf16" if PLANS[plan].storage == "native" else "fp8")


def memory_of(name: str, shapes: str) -> str:
    """The ``memory`` a plan is loaded for: a partial plan at the published shapes gets its card's
    size (PARTIAL_MEMORY), everything else the device's own (auto)."""
    if shapes == "published" and PLANS[split_plan(name)[1]].offload == "partial":
        return PARTIAL_MEMORY[storage_of(name)]
    return "auto"


def parse_plans(text: str) -> list[str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in ALL_PLANS]
    if unknown or not names:
        raise UsageError(f"--plans: unknown plan(s) {', '.join(unknown) or '(none given)'}; "
                         f"known: {', '.join(ALL_PLANS)}")
    return list(dict.fromkeys(names))


def random_embeddings(preset, device: torch.device, dtype: torch.dtype, seed: int):
    """One instruction's embeddings of the preset's T5 / CLIP shapes (FLUX: 512 x 4096 and 768)."""
    from kontext_core.text import TextEmbeddings

    gen = torch.Generator("cpu").manual_seed(seed)
    t5 = torch.randn(1, preset.text.t5_max_length, preset.transformer.context_in_dim, generator=gen)
    pooled = torch.randn(1, preset.transformer.vec_in_dim, generator=gen)
    return TextEmbeddings(t5.to(device, dtype), pooled.to(device, dtype), [False], [False])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _stored_bytes(editor) -> int:
    from kontext_core.quant.plans import weight_bytes

    return sum(sum(weight_bytes(m).values()) for m in (editor.transformer, editor.autoencoder))


def _peak(device: torch.device, editor) -> int:
    """The allocator's peak since the last reset; on the CPU (no such peak) the weight bytes there."""
    from kontext_core.quant.load import resident_bytes

    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else resident_bytes(editor)


def run_plan(name: str, folder: Path, args, device: torch.device, embeddings) -> tuple[dict, np.ndarray]:
    """Load ``folder`` under the plan, warm up, time one edit; the plan's JSON object and pixels."""
    from kontext_core.quant.load import load_with_plan, plan_for, resident_bytes

    _, plan = split_plan(name)
    size, dtype = (args.size, args.size), torch.bfloat16
    memory = memory_of(name, args.shapes)
    chosen = plan_for(folder, device, dtype, memory, plan=plan, size=size, text=False)
    predicted = chosen.peak_device_bytes
    _free(device)
    t0 = time.perf_counter()
    editor = load_with_plan(folder, device=device, dtype=dtype, memory=memory, plan=plan, size=size, text=False)
    load_s = time.perf_counter() - t0
    load_peak = _peak(device, editor)
    if device.type == "cuda":  # the edit's own peak too: loading may peak higher (fp8 casts after loading)
        torch.cuda.reset_peak_memory_stats(device)
    image = Image.new("RGB", size, (180, 60, 40))
    editor.edit([image], ["x"], [0], steps=args.warmup_steps, size=size, embeddings=embeddings)
    _sync(device)
    t0 = time.perf_counter()
    out = editor.edit([image], ["x"], [0], steps=args.steps, size=size, embeddings=embeddings)
    _sync(device)
    seconds = time.perf_counter() - t0
    edit_peak = _peak(device, editor)
    peak = max(load_peak, edit_peak)
    result = {"name": name, "s_per_image": seconds, "s_per_step": seconds / args.steps, "peak_gib": peak / GIB,
              "load_peak_gib": load_peak / GIB, "edit_peak_gib": edit_peak / GIB,
              "predicted_gib": predicted / GIB, "storage": storage_of(name), "exact": storage_of(name) == "bf16",
              "stored_bytes": _stored_bytes(editor), "resident_gib": resident_bytes(editor) / GIB,
              "load_s": load_s, "steps": args.steps, "size": args.size, "memory": memory,
              "streamed_blocks": chosen.streamed_blocks, "streamed_gib": chosen.streamed_bytes / GIB,
              "peak_source": "torch.cuda.max_memory_allocated" if device.type == "cuda" else
              "weight bytes on the device after loading (no allocator peak on the CPU)"}
    pixels = np.asarray(out.images[0], dtype=np.int16)
    del editor, out
    _free(device)
    return result, pixels


class Folders:
    """The bf16 folder, and each GGUF copy made the first time one of its plans runs."""

    def __init__(self, root: Path, preset, device: torch.device, seed: int):
        self.root, self.preset, self.device, self.seed = root, preset, device, seed
        self.made: dict[str, Path] = {}
        self.failed: dict[str, Exception] = {}
        self.write_s: dict[str, float] = {}

    def get(self, family: str) -> Path:
        if family in self.failed:  # one try per folder: its other plans fail with the same reason
            raise self.failed[family]
        if family not in self.made:
            t0 = time.perf_counter()
            try:
                if family == "bf16":
                    path = random_checkpoint.write_random_folder(self.root / "bf16", self.preset, self.device,
                                                                 self.seed)
                else:
                    path = random_checkpoint.write_gguf_folder(self.get("bf16"), self.root / family, family,
                                                               self.device)
            except (RuntimeError, ValueError, OSError, ImportError) as e:
                shutil.rmtree(self.root / family, ignore_errors=True)  # a partial file would hold the disk
                self.failed[family] = e
                raise
            self.made[family] = path
            self.write_s[family] = time.perf_counter() - t0
            print(f"[wrote the {family} checkpoint in {self.write_s[family]:.1f} s: {path}]", flush=True)
        return self.made[family]

    def release(self, family: str) -> None:
        """Delete a folder no later plan needs (a 64 GiB disk holds bf16 + one GGUF copy, not all)."""
        path = self.made.pop(family, None)
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)


def last_uses(plans: list[str]) -> dict[int, list[str]]:
    """Plan index -> the folders last needed by that plan (bf16 is also the GGUF copies' source)."""
    last: dict[str, int] = {}
    for i, name in enumerate(plans):
        family = split_plan(name)[0]
        if family not in last:
            last["bf16"] = i  # a GGUF copy is made from the bf16 folder when its first plan runs
        last[family] = i
    out: dict[int, list[str]] = {}
    for family, i in last.items():
        out.setdefault(i, []).append(family)
    return out


def add_comparisons(results: list[dict], reference: np.ndarray | None, pixels: dict[str, np.ndarray]) -> None:
    """Each plan against the resident plan: peak and time ratios, largest pixel difference (levels)."""
    base = next((r for r in results if r["name"] == "resident" and "error" not in r), None)
    for r in results:
        if "error" in r or base is None:
            continue
        r["peak_vs_resident"] = r["peak_gib"] / base["peak_gib"] if base["peak_gib"] else None
        r["time_vs_resident"] = r["s_per_image"] / base["s_per_image"] if base["s_per_image"] else None
        if reference is not None and r["name"] in pixels:
            r["max_diff_vs_resident"] = int(np.abs(pixels[r["name"]] - reference).max())


def judge_targets(results: list[dict], shapes: str, device: torch.device) -> list[dict]:
    measured = {r["name"]: r["peak_gib"] for r in results if "error" not in r}
    out = []
    for what, plans, limit in TARGETS:
        best = min(((measured[p], p) for p in plans if p in measured), default=None)
        if shapes != "published" or device.type != "cuda":
            verdict = "n/a (only judged at the published shapes on CUDA)"
        elif best is None:
            verdict = "not measured"
        else:
            verdict = "pass" if best[0] <= limit else "FAIL"
        out.append({"target": f"{what} <= {limit:g} GiB", "plans": list(plans), "best_plan": best and best[1],
                    "best_peak_gib": best and best[0], "verdict": verdict})
    return out


def _mem(gib: float) -> str:
    """GiB, or MiB for the tiny shapes' few megabytes."""
    return f"{gib:.2f}G" if gib >= 0.1 else f"{gib * 1024:.2f}M"


def print_table(results: list[dict], targets: list[dict], args) -> None:
    print(f"\n{'plan':>22s} {'predicted':>10s} {'peak':>9s} {'load':>9s} {'edit':>9s} {'s/image':>8s} "
          f"{'vs resident':>17s}   "
          f"{args.shapes} shapes, {args.size}^2, {args.steps} steps, {args.device}")
    for r in results:
        if "error" in r:
            print(f"{r['name']:>22s}  error: {r['error']}")
            continue
        vs = "-"
        if r.get("peak_vs_resident") is not None:
            vs = f"{r['peak_vs_resident']:.2f}x mem {r['time_vs_resident']:.2f}x t"
        print(f"{r['name']:>22s} {_mem(r['predicted_gib']):>10s} {_mem(r['peak_gib']):>9s} "
              f"{_mem(r['load_peak_gib']):>9s} {_mem(r['edit_peak_gib']):>9s} {r['s_per_image']:8.2f} {vs:>17s}")
    print("(peak = max(load, edit), the allocator's peaks while loading and while editing; predicted: plan_for; "
          f"partial plans sized for {', '.join(f'{k} {v}' for k, v in PARTIAL_MEMORY.items())})")
    for t in targets:
        best = f"{t['best_plan']} {_mem(t['best_peak_gib'])}" if t["best_plan"] else "-"
        print(f"target {t['target']:<36s} {t['verdict']:<6s} best: {best}")


def write_json(path: Path | None, args, results: list[dict], targets: list[dict], folders: Folders) -> None:
    if path is None:
        return
    doc = {"settings": {"shapes": args.shapes, "device": args.device, "size": args.size, "steps": args.steps,
                        "warmup_steps": args.warmup_steps, "dtype": "bfloat16", "write_s": folders.write_s},
           "plans": results, "targets": targets}
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=True))
    tmp.replace(path)


def _finite(result: dict) -> bool:
    return all(math.isfinite(result[k]) for k in ("s_per_image", "peak_gib", "predicted_gib"))


def _exit_on_term(signum, frame) -> None:
    raise SystemExit(128 + signum)


def bench(args, plans: list[str], device: torch.device) -> int:
    preset = load_preset(SHAPES[args.shapes])
    embeddings = {"x": random_embeddings(preset, device, torch.bfloat16, args.seed)}
    workdir = Path(tempfile.mkdtemp(prefix="bench_memory-", dir=args.workdir))
    folders = Folders(workdir, preset, device, args.seed)
    results: list[dict] = []
    pixels: dict[str, np.ndarray] = {}
    releases = last_uses(plans)
    previous = signal.signal(signal.SIGTERM, _exit_on_term)  # `timeout` stops it: still remove the checkpoints
    try:
        for i, name in enumerate(plans):
            try:
                result, pixels[name] = run_plan(name, folders.get(split_plan(name)[0]), args, device, embeddings)
            except (RuntimeError, ValueError, OSError, ImportError) as e:
                # OOM, a plan refused, a full disk, no gguf package: record it, the next plan runs
                result = {"name": name, "storage": storage_of(name), "exact": storage_of(name) == "bf16",
                          "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            _free(device)  # out of the except block: the traceback no longer holds the failed editor
            results.append(result)
            for family in releases.get(i, []):
                folders.release(family)
            print(f"[{name}: {'error' if 'error' in result else 'done'}]", flush=True)
            add_comparisons(results, pixels.get("resident"), pixels)
            write_json(args.json, args, results, judge_targets(results, args.shapes, device), folders)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    targets = judge_targets(results, args.shapes, device)
    print_table(results, targets, args)
    write_json(args.json, args, results, targets, folders)
    return 0 if all("error" not in r and _finite(r) for r in results) else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", choices=tuple(SHAPES), default="published",
                        help="published: FLUX.1 Kontext [dev]; tiny: tiny-random (checks this script anywhere)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--size", type=int, default=1024, help="output and source size in pixels (square)")
    parser.add_argument("--steps", type=int, default=28, help="steps of the timed edit")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps of the warm-up edit")
    parser.add_argument("--plans", default=",".join(ALL_PLANS), help=f"comma-separated, of: {', '.join(ALL_PLANS)}")
    parser.add_argument("--json", type=Path, help="write the results here (rewritten after each plan)")
    parser.add_argument("--workdir", help="where the random checkpoints go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the random checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="= --shapes tiny --device cpu --steps 2 --size 64")
    args = parser.parse_args(argv)
    if args.smoke:
        args.shapes, args.device, args.steps, args.size = "tiny", "cpu", 2, 64
    if args.steps < 1 or args.warmup_steps < 1 or args.size < 16:
        raise UsageError("--steps and --warmup-steps must be at least 1 and --size at least 16")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
        plans = parse_plans(args.plans)
        device = torch.device(args.device)
    except (UsageError, RuntimeError) as e:
        print(f"bench_memory: {e}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_memory: no CUDA GPU here; it measures GPU memory per plan. Run it on a GPU machine, "
              "or pass --shapes tiny --device cpu (or --smoke) to check this script on the CPU", file=sys.stderr)
        return 2
    return bench(args, plans, device)


if __name__ == "__main__":
    raise SystemExit(main())
