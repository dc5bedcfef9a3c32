"""A synthetic run directory (ledger, results, config, sources, outputs) for tests, benchmarks and
demos of the reporting layer without a model or a GPU.

Products are drawn as a coloured disc on a background; a variant repaints the background (the
usual e-commerce edit). Chosen rows instead fail, hit the cache, are retried once, come out
unchanged (edit did not happen) or change all over (the product drifted).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from pipeline.provenance import encode_image_with_provenance, provenance_params, sidecar_json
from pipeline.reports.usage import MODEL_PHASES

PHASES = {"read": 0.05, "decode": 0.02, "text_encode": 0.1, "context_encode": 0.3, "denoise": 6.0,
          "decode_latents": 0.4, "failed_model": 0.0, "file_encode": 0.1, "commit": 0.05}
# A retried row's first try, as the actor writes a model call that raised (out of memory after
# 2 s on the device): the source was read and decoded, the model's seconds are failed_model.
FAILED_TRY_PHASES = dict.fromkeys(PHASES, 0.0) | {"read": PHASES["read"], "decode": PHASES["decode"],
                                                  "failed_model": 2.0}
LOAD_SECONDS = 20.0
GAP_SECONDS = 0.5
T0 = 1_800_000_000.0
SAMPLER = {"steps": 28, "guidance": 2.5, "size": "native"}


@dataclass
class SyntheticRun:
    out_root: Path
    run_dir: Path
    rows: list[dict[str, Any]]  # one per manifest row: params, status, output path, ...
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # row_id -> provenance params


def product_image(index: int, size: int) -> Image.Image:
    rng = np.random.default_rng(index)
    base = rng.integers(150, 230, size=3)
    grad = np.linspace(0.85, 1.0, size, dtype=np.float32)[:, None, None]
    pixels = (grad * base[None, None, :]).repeat(size, axis=1).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in rng.integers(20, 140, size=3))
    margin = size // 5
    draw.ellipse((margin, margin, size - margin, size - margin), fill=colour)
    return img


def variant_image(source: Image.Image, variant: int, size: int) -> Image.Image:
    """Repaint the background, keep the disc (the product)."""
    arr = np.asarray(source).copy()
    corner = arr[0, 0].astype(int)
    mask = np.abs(arr.astype(int) - corner).sum(axis=2) < 90  # background pixels
    hue = np.array([(60 * variant) % 255, (140 + 50 * variant) % 255, (220 - 40 * variant) % 255], dtype=np.uint8)
    arr[mask] = hue
    return Image.fromarray(arr, "RGB")


@lru_cache(maxsize=2)
def _noise_field(height: int, width: int, grain: float) -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, grain, size=(height, width, 3)).astype(np.float32)


def _grainy(img: Image.Image, grain: float, seed: int) -> Image.Image:
    """Add noise: one field per size, shifted per image (drawing fresh noise is the slow part)."""
    if grain <= 0:
        return img
    noise = np.roll(_noise_field(img.height, img.width, grain), shift=(seed * 7919) % (img.height * img.width), axis=None)
    return Image.fromarray(np.clip(np.asarray(img) + noise, 0, 255).astype(np.uint8))


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def make_synthetic_run(out_root: str | Path, *, run_id: str = "run-synthetic", products: int = 3,
                       variants: int = 4, image_size: int = 128, fmt: str = "png",
                       device_type: str = "H100", actors: int = 2,
                       failed: tuple[int, ...] = (), cache_hits: tuple[int, ...] = (),
                       retried: tuple[int, ...] = (), unchanged: tuple[int, ...] = (),
                       spread: tuple[int, ...] = (), not_run: tuple[int, ...] = (),
                       instructions: dict[int, str] | None = None, actor_dies: bool = False,
                       pricing: dict[str, Any] | None = None, grain: float = 0.0,
                       output_size: int | None = None) -> SyntheticRun:
    """Write OUT/runs/<run_id>/ with a consistent ledger, results.parquet and images.

    Row indices in `failed`, `cache_hits`, ... select what happens to those rows. With
    `actor_dies`, the last actor writes no actor-stop (charged until its last attempt). `grain`
    adds sensor-like noise (std in 0..255 units) so files compress and decode like photos.
    `output_size` makes outputs that size (a model that edits at a lower resolution than its
    sources, like kontext-tiny: 64 px outputs of 128 px sources)."""
    out_root = Path(out_root)
    run_dir = out_root / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    src_dir = out_root / "sources"
    src_dir.mkdir(parents=True, exist_ok=True)
    instructions = instructions or {}
    ext = {"png": "png", "jpeg": "jpg", "webp": "webp"}[fmt]
    fingerprint = "f" * 16
    records: list[dict[str, Any]] = []

    def rec(type_: str, ts: float, **fields: Any) -> dict[str, Any]:
        r = {"v": 1, "type": type_, "run_id": run_id, "ts": ts, **fields}
        records.append(r)
        return r

    total = products * variants
    rec("run-start", T0, manifest=str(src_dir / "manifest.parquet"), rows_total=total,
        model="kontext-tiny", fingerprint=fingerprint, settings=SAMPLER)
    clocks = []
    for a in range(actors):
        start = T0 + 1 + a
        rec("actor-load", start + LOAD_SECONDS, actor=f"actor-{a}", node="node-0", device=f"cuda:{a}",
            device_type=device_type, start=start, end=start + LOAD_SECONDS)
        clocks.append(start + LOAD_SECONDS)

    rows: list[dict[str, Any]] = []
    params_by_row: dict[str, dict[str, Any]] = {}
    next_actor = 0
    for p in range(products):
        source = _grainy(product_image(p, image_size), grain, p)
        source_name = f"product-{p}.png"
        source.save(src_dir / source_name)
        for v in range(variants):
            index = p * variants + v
            row_id = f"p{p}-v{v}"
            instruction = instructions.get(index, f"put the product on background {v}")
            seed = 1000 + index
            key = _key(p, v, seed, instruction)
            row = {"row_id": row_id, "row_index": index, "product_id": f"P{p:03d}", "variant": f"bg-{v}",
                   "instruction": instruction, "seed": seed, "image": source_name, "key": key,
                   "status": "done", "output_uri": None, "attempts": 0, "error_class": None,
                   "reason": None, "cache_hit": False, "seconds": None}
            rows.append(row)
            common = {"row_id": row_id, "row_index": index, "key": key, "product_id": row["product_id"],
                      "variant": row["variant"], "instruction": instruction, "seed": seed, "image": source_name}
            if index in not_run:
                row["status"] = "not-run"
                continue
            params = provenance_params(run_id=run_id, row_id=row_id, instruction=instruction, seed=seed,
                                       model="kontext-tiny", fingerprint=fingerprint, sampler=SAMPLER, key=key)
            params_by_row[row_id] = params
            path = out_root / "store" / "objects" / key[:2] / f"{key}.{ext}"
            if index in failed:
                a = next_actor % actors
                next_actor += 1
                start = clocks[a]
                phases = dict.fromkeys(PHASES, 0.0) | {"read": PHASES["read"]}
                end = start + PHASES["read"]
                clocks[a] = end + GAP_SECONDS
                rec("attempt", end, **common, attempt=1, outcome="failed-permanent", error_class="bad-row",
                    error=f"image {source_name} cannot be decoded", actor=f"actor-{a}", node="node-0",
                    device=f"cuda:{a}", device_type=device_type, start=start, end=end, phases=phases,
                    output_uri=None, bytes=None)
                row.update(status="failed", attempts=1, error_class="bad-row",
                           reason=f"image {source_name} cannot be decoded")
                continue
            if index in unchanged:
                noise = np.random.default_rng(index).integers(-2, 3, size=(image_size, image_size, 3))
                output = Image.fromarray(np.clip(np.asarray(source).astype(int) + noise, 0, 255).astype(np.uint8))
            elif index in spread:
                output = product_image(10_000 + index, image_size).rotate(90)
                output = Image.fromarray(255 - np.asarray(output))
            else:
                output = variant_image(source, v + 1, image_size)
            if output_size is not None and output_size != image_size:
                output = output.resize((output_size, output_size), Image.Resampling.BOX)
            fast = {"compress_level": 1} if fmt == "png" else {}  # set-up speed; decodes alike
            data = encode_image_with_provenance(_grainy(output, grain, 7_000 + index), fmt, params, **fast)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.with_suffix(".json").write_bytes(sidecar_json(params, image_bytes=data))
            row["output_uri"] = str(path)
            if index in cache_hits:
                now = clocks[0] if clocks else T0 + 1
                rec("attempt", now, **common, attempt=1, outcome="cache-hit", error_class=None, error=None,
                    actor=None, node=None, device=None, device_type=None, start=now, end=now,
                    phases=dict.fromkeys(PHASES, 0.0), output_uri=str(path), bytes=len(data))
                row.update(status="cache-hit", cache_hit=True)
                continue
            tries = 2 if index in retried else 1
            for attempt in range(1, tries + 1):
                a = next_actor % actors
                next_actor += 1
                start = clocks[a]
                last = attempt == tries
                phases = dict(PHASES) if last else dict(FAILED_TRY_PHASES)
                end = start + sum(phases.values())
                clocks[a] = end + GAP_SECONDS
                rec("attempt", end, **common, attempt=attempt, outcome="ok" if last else "retry-scheduled",
                    error_class=None if last else "transient",
                    error=None if last else "CUDA out of memory (synthetic)", actor=f"actor-{a}",
                    node="node-0", device=f"cuda:{a}", device_type=device_type, start=start, end=end,
                    phases=phases, output_uri=str(path) if last else None, bytes=len(data) if last else None)
            row.update(attempts=tries, seconds=sum(PHASES[k] for k in MODEL_PHASES))
    last_end = max(clocks, default=T0 + 1)
    for a in range(actors):
        if actor_dies and a == actors - 1:
            continue
        rec("actor-stop", last_end + 1, actor=f"actor-{a}", end=clocks[a] + 1.0)
    status = "failed-rows" if failed else ("interrupted" if not_run else "complete")
    rec("run-end", last_end + 2, status=status)

    with open(run_dir / "ledger.jsonl", "w", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps(r, separators=(",", ":")) + "\n")
    config = {"run_id": run_id, "model": "kontext-tiny", "fingerprint": fingerprint, "sampler": SAMPLER}
    if pricing is not None:
        config["pricing"] = pricing
    (run_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("row_id", pa.string()), ("row_index", pa.int64()), ("product_id", pa.string()), ("variant", pa.string()),
        ("instruction", pa.string()), ("seed", pa.int64()), ("image", pa.string()), ("key", pa.string()),
        ("status", pa.string()), ("output_uri", pa.string()), ("attempts", pa.int64()),
        ("error_class", pa.string()), ("reason", pa.string()), ("cache_hit", pa.bool_()), ("seconds", pa.float64()),
    ]))
    pq.write_table(table, run_dir / "results.parquet")
    return SyntheticRun(out_root=out_root, run_dir=run_dir, rows=rows, params=params_by_row)


def make_large_run(out_root: str | Path, *, rows: int, run_id: str = "run-large", variants: int = 10,
                   generated_every: int = 20, failed_every: int = 1000, image_size: int = 64,
                   actors: int = 4, device_type: str = "H100",
                   pricing: dict[str, Any] | None = None) -> SyntheticRun:
    """A big nightly re-run for scale benchmarks and tests, written quickly: most rows hit the cache.

    Row i fails when i % failed_every == failed_every - 1, is generated in this run when
    i % generated_every == 0, and is a cache hit otherwise (1 - 1/generated_every of the rows:
    95 % by default). Cache hits are written compact, as the runner writes them. Every done or
    cache-hit row has an output file, so older reports that decoded every row can be timed on the
    same folder: a generated row's output carries its provenance; a cache hit's is a hard link to
    its variant's template output (generated by an earlier run; the pixels are what matter).
    The returned SyntheticRun's `rows` is empty: results.parquet holds them."""
    from pipeline.ledger import compact_cache_hit

    out_root = Path(out_root)
    run_dir = out_root / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    src_dir = out_root / "sources"
    src_dir.mkdir(parents=True, exist_ok=True)
    objects = out_root / "store" / "objects"
    fingerprint = "f" * 16
    templates: dict[int, Path] = {}
    ledger_path = run_dir / "ledger.jsonl"
    clocks = [T0 + 1 + a + LOAD_SECONDS for a in range(actors)]
    columns: dict[str, list[Any]] = {name: [] for name in (
        "row_id", "row_index", "product_id", "variant", "instruction", "seed", "image", "key", "status",
        "output_uri", "attempts", "error_class", "reason", "cache_hit", "seconds")}
    with open(ledger_path, "w", encoding="utf-8") as ledger:

        def rec(type_: str, ts: float, **fields: Any) -> None:
            ledger.write(json.dumps({"v": 1, "type": type_, "run_id": run_id, "ts": ts, **fields},
                                    separators=(",", ":")) + "\n")

        rec("run-start", T0, manifest=str(src_dir / "manifest.parquet"), rows_total=rows,
            model="kontext-tiny", fingerprint=fingerprint, settings=SAMPLER)
        for a in range(actors):
            start = T0 + 1 + a
            rec("actor-load", start + LOAD_SECONDS, actor=f"actor-{a}", node="node-0", device=f"cuda:{a}",
                device_type=device_type, start=start, end=start + LOAD_SECONDS)
        source: Image.Image | None = None
        for index in range(rows):
            p, v = divmod(index, variants)
            source_name = f"product-{p}.png"
            if v == 0:
                source = product_image(p, image_size)
                source.save(src_dir / source_name, compress_level=1)
            row_id, instruction, seed = f"p{p}-v{v}", f"put the product on background {v}", 1000 + index
            key = _key(p, v, seed, instruction)
            common = {"row_id": row_id, "row_index": index, "key": key, "product_id": f"P{p:05d}",
                      "variant": f"bg-{v}", "instruction": instruction, "seed": seed, "image": source_name}
            path = objects / key[:2] / f"{key}.png"
            a = index % actors
            if index % failed_every == failed_every - 1:
                start = clocks[a]
                end = start + PHASES["read"]
                clocks[a] = end + GAP_SECONDS
                reason = f"image {source_name} cannot be decoded"
                rec("attempt", end, **common, attempt=1, outcome="failed-permanent", error_class="bad-row",
                    error=reason, actor=f"actor-{a}", node="node-0", device=f"cuda:{a}", device_type=device_type,
                    start=start, end=end, phases=dict.fromkeys(PHASES, 0.0) | {"read": PHASES["read"]},
                    output_uri=None, bytes=None)
                status, uri, attempts, error_class, seconds = "failed", None, 1, "bad-row", None
            elif index % generated_every == 0 or v not in templates:
                assert source is not None
                params = provenance_params(run_id=run_id, row_id=row_id, instruction=instruction, seed=seed,
                                           model="kontext-tiny", fingerprint=fingerprint, sampler=SAMPLER, key=key)
                data = encode_image_with_provenance(variant_image(source, v + 1, image_size), "png", params,
                                                    compress_level=1)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                if index % generated_every != 0:  # the template for this variant's cache hits
                    templates[v] = path
                else:
                    start = clocks[a]
                    end = start + sum(PHASES.values())
                    clocks[a] = end + GAP_SECONDS
                    rec("attempt", end, **common, attempt=1, outcome="ok", error_class=None, error=None,
                        actor=f"actor-{a}", node="node-0", device=f"cuda:{a}", device_type=device_type,
                        start=start, end=end, phases=dict(PHASES), output_uri=str(path), bytes=len(data))
                    status, uri, attempts, error_class, reason = "done", str(path), 1, None, None
                    seconds = sum(PHASES[k] for k in MODEL_PHASES)
            if index % failed_every != failed_every - 1 and index % generated_every != 0:
                if not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.hardlink_to(templates[v])
                now = clocks[0]
                rec("attempt", now, **compact_cache_hit({
                    **common, "attempt": 1, "outcome": "cache-hit", "error_class": None, "error": None,
                    "actor": None, "pid": None, "node": None, "device": None, "device_type": None,
                    "start": now, "end": now, "phases": dict.fromkeys(PHASES, 0.0),
                    "output_uri": str(path), "bytes": 0}))
                status, uri, attempts, error_class, reason, seconds = "cache-hit", str(path), 0, None, None, None
            for name, value in (*common.items(), ("status", status), ("output_uri", uri), ("attempts", attempts),
                                ("error_class", error_class), ("reason", reason),
                                ("cache_hit", status == "cache-hit"), ("seconds", seconds)):
                columns[name].append(value)
        last_end = max(clocks)
        for a in range(actors):
            rec("actor-stop", last_end + 1, actor=f"actor-{a}", end=clocks[a] + 1.0)
        rec("run-end", last_end + 2, status="failed-rows" if failed_every <= rows else "complete")
    config = {"run_id": run_id, "model": "kontext-tiny", "fingerprint": fingerprint, "sampler": SAMPLER}
    if pricing is not None:
        config["pricing"] = pricing
    (run_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    pq.write_table(pa.table(columns, schema=pa.schema([
        ("row_id", pa.string()), ("row_index", pa.int64()), ("product_id", pa.string()), ("variant", pa.string()),
        ("instruction", pa.string()), ("seed", pa.int64()), ("image", pa.string()), ("key", pa.string()),
        ("status", pa.string()), ("output_uri", pa.string()), ("attempts", pa.int64()),
        ("error_class", pa.string()), ("reason", pa.string()), ("cache_hit", pa.bool_()), ("seconds", pa.float64()),
    ])), run_dir / "results.parquet")
    return SyntheticRun(out_root=out_root, run_dir=run_dir, rows=[])
