"""Scale benchmark: plan and finish a 200,000-row manifest whose rows are all cache hits.

    .venv/bin/python benchmarks/bench_scale.py [--rows 200000] [--variants 10] [--dir DIR]

Setup (not timed): PRODUCTS = rows / variants small source PNGs, a manifest of every
product x variant, and a fake committed output in the store for every row's key (keys are
computed with the runner's own planning code). Then `kontext-batch run` is timed twice in
a fresh process each time:

1. cold: the source-digest index is deleted first, so every source file is hashed;
2. warm: the index from run 1 answers, no source is read.

Each prints the wall time and the driver's peak RSS (the child's ru_maxrss). The run must
end with every row a cache hit and start no Ray and no model. Target on the 2-core dev
machine: under 60 s and under 1 GB.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODEL = "tiny-random"


def write_sources(folder: Path, products: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    base = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(base, format="PNG")
    template = base.getvalue()
    names = []
    for i in tqdm(range(products), desc="sources", unit="file"):
        name = f"p{i:06d}.png"
        # A distinct file per product: the PNG plus a trailing counter (digest differs).
        (folder / name).write_bytes(template + i.to_bytes(4, "little"))
        names.append(name)
    return names


def write_manifest(path: Path, names: list[str], variants: int) -> int:
    image, instruction, seed, row_id, product = [], [], [], [], []
    for p, name in enumerate(names):
        for v in range(variants):
            image.append(f"images/{name}")
            instruction.append(f"place the product on background {v}")
            seed.append(v)
            row_id.append(f"p{p}-v{v}")
            product.append(f"p{p}")
    table = pa.table({"image": image, "instruction": instruction, "seed": seed,
                      "row_id": row_id, "product_id": product})
    pq.write_table(table, path, row_group_size=65536)
    return table.num_rows


FAKE_OUTPUT = b"fake output"
FAKE_SIDECAR = ('{"key": "%s", "bytes": ' + str(len(FAKE_OUTPUT)) + ', "sha256": "'
                + hashlib.sha256(FAKE_OUTPUT).hexdigest() + '", "fake": true}')


def precommit(manifest: Path, out: Path) -> int:
    """Commit a fake output for every row's key, exactly as the runner computes keys."""
    from pipeline.cache import ModelSettings
    from pipeline.digests import SourceDigests, default_index_path
    from pipeline.manifest_input import check_manifest, iter_manifest
    from pipeline.model_info import resolve_model_info
    from pipeline.plan import RowDefaults, make_task
    from pipeline.store import Store

    info = resolve_model_info(MODEL)
    model = ModelSettings(model_fingerprint=info.fingerprint, dtype="float32")
    defaults = RowDefaults(info.default_steps, info.default_guidance, "png")
    store = Store(str(out / "store"))
    digests = SourceDigests(default_index_path(store.root))
    checked = check_manifest(str(manifest))
    made_dirs: set[str] = set()
    count = 0
    with tqdm(total=checked.rows_total, desc="pre-commit", unit="row") as bar:
        for batch in iter_manifest(checked):
            found = digests.digest_many(r.image for r in batch)
            for row in batch:
                task = make_task(row, found[row.image], model, defaults)
                folder = os.path.dirname(store.object_path(task.key, task.ext))
                if folder not in made_dirs:
                    os.makedirs(folder, exist_ok=True)
                    made_dirs.add(folder)
                # Fake outputs are written directly (no temp+rename): setup, not the product.
                # The sidecar records what planning checks every hit against (pipeline.store).
                with open(store.sidecar_path(task.key), "w") as f:
                    f.write(FAKE_SIDECAR % task.key)
                with open(store.object_path(task.key, task.ext), "wb") as f:
                    f.write(FAKE_OUTPUT)
                count += 1
            bar.update(len(batch))
    digests.close()
    return count


def timed_run(manifest: Path, out: Path) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MiB, exit code, output tail) of one CLI run in a child."""
    cmd = [sys.executable, "-m", "pipeline.cli", "run", str(manifest), "--out", str(out),
           "--model", MODEL, "--device", "cpu", "--no-report", "--quiet"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH_")}
    env["HF_HUB_OFFLINE"] = "1"  # the run's local Ray gets its own token, as a user's does
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
    output = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status), output


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--variants", type=int, default=10, help="rows per source image")
    parser.add_argument("--dir", help="work folder (default: a temp folder, removed after)")
    args = parser.parse_args()
    products = max(1, args.rows // args.variants)
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench_scale_"))
    try:
        manifest_dir = work / "manifest"
        t0 = time.perf_counter()
        names = write_sources(manifest_dir / "images", products)
        rows = write_manifest(manifest_dir / "manifest.parquet", names, args.variants)
        out = work / "out"
        committed = precommit(manifest_dir / "manifest.parquet", out)
        print(f"setup: {rows} rows over {products} source files, {committed} outputs "
              f"pre-committed in {time.perf_counter() - t0:.1f} s")
        index = out / "store" / "index" / "source_digests.sqlite"
        results = []
        for label in ("cold (digest index deleted)", "warm (digest index present)"):
            if label.startswith("cold"):
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{index}{suffix}").unlink(missing_ok=True)
            wall, rss, code, output = timed_run(manifest_dir / "manifest.parquet", out)
            summary = next((ln for ln in output.splitlines() if ln.startswith("run ")), "")
            results.append((label, wall, rss, code, summary))
            if code != 0 or f"{rows} cache hits" not in summary:
                print(output[-3000:])
                print(f"FAILED: {label}: exit {code}; expected {rows} cache hits")
                return 1
        print(f"\n{rows} rows, all cache hits, `kontext-batch run` in a fresh process:")
        for label, wall, rss, _, _summary in results:
            print(f"  {label:30s} wall {wall:6.1f} s   driver peak RSS {rss:7.1f} MiB")
        print(f"  ({results[-1][4]})")
        print(f"target: under 60 s and under 1024 MiB; machine: {os.cpu_count()} CPUs")
        return 0
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
