"""What review and publish read about a run: where it is, its OUT folder and store, and its rows.

The rows come from results.parquet (row_id, key, status, output_uri, product_id, variant,
instruction, seed, image, reason). Flags (unchanged, spread, ...) come from the run's static
review page when it was built (its embedded JSON data): they are the reports' judgement, read
here, not recomputed.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

RESULT_COLUMNS = ("row_id", "row_index", "key", "status", "output_uri", "product_id", "variant",
                  "instruction", "seed", "image", "reason", "error_class", "meta_product",
                  "meta_variant_sku", "flags", "truncated", "notes", "cost", "meta_redo_of")
REVIEWABLE = ("done", "cache-hit")  # rows with an output to decide on


class RunNotFound(ValueError):
    """RUN_DIR / JOB --date that names no readable run; the message says what to give instead."""


@dataclass(frozen=True)
class ReviewRow:
    index: int  # position in results.parquet (the server's handle for a row: no paths in URLs)
    row_id: str
    key: str | None
    status: str
    output_uri: str | None
    product_id: str | None
    variant: str | None
    instruction: str
    seed: int | None
    image: str | None
    reason: str | None
    flags: tuple[str, ...] = ()
    title: str | None = None  # the catalog's product name (meta_product), when it has one
    variant_sku: str | None = None  # a shop variant the image belongs to (meta_variant_sku)
    truncated: bool = False  # the instruction was cut at T5's token limit
    notes: str | None = None  # what was done to the input (EXIF, transparency, CLIP cut, ...)
    cost: float | None = None  # the row's device-busy cost (results ``cost``, from the report)
    redo_of: str | None = None  # a redo's candidate: the reviewed run's row it is made for

    @property
    def reviewable(self) -> bool:
        return self.status in REVIEWABLE and bool(self.key) and bool(self.output_uri)


@dataclass
class RunTarget:
    run_dir: Path
    out_dir: Path
    store_root: str
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.config.get("run_id") or self.run_dir.name)


def _config(run_dir: Path) -> dict[str, Any]:
    from pipeline.run_config import read_config_file

    return read_config_file(run_dir)


def run_target(run_dir: str | os.PathLike) -> RunTarget:
    """A run folder (OUT/runs/<run_id>) with its results table."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / "results.parquet").is_file():
        what = "is not a folder" if not run_dir.is_dir() else "has no results.parquet"
        raise RunNotFound(f"{run_dir} {what}; give a run folder (OUT/runs/<run_id>) of a "
                          "finished run, or a job name with --date YYYY-MM-DD")
    config = _config(run_dir)
    out_dir = Path(config["out"]) if isinstance(config.get("out"), str) else run_dir.parent.parent
    store = config.get("store") if isinstance(config.get("store"), str) else str(out_dir / "store")
    return RunTarget(run_dir=run_dir, out_dir=out_dir, store_root=store, config=config)


DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# How `JOB --date D` names a run: set by the jobs layer (jobs.review_targets), which sits above
# pipeline and knows job specs; pipeline itself only knows run folders.
JOB_TARGETS: Callable[[str, str, str | None], RunTarget] | None = None


def resolve_target(where: str, date: str | None, jobs_dir: str | None = None) -> RunTarget:
    """RUN_DIR, or JOB with --date."""
    if date is not None:
        if JOB_TARGETS is None:
            raise RunNotFound(f"{where} --date {date}: job names are resolved by the kontext-batch "
                              "command (jobs); run it as `kontext-batch ...` or give the run folder")
        return JOB_TARGETS(where, date, jobs_dir)
    if Path(where).expanduser().is_dir():
        return run_target(where)
    raise RunNotFound(f"{where} is not a run folder; give OUT/runs/<run_id>, or a job name "
                      f"with --date YYYY-MM-DD (e.g. {where} --date "
                      f"{dt.date.today().isoformat()})")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def load_rows(run_dir: Path) -> list[ReviewRow]:
    """Every row of results.parquet, in table order, with its flags (results ``flags``; the
    review page's for tables written before that column existed)."""
    path = run_dir / "results.parquet"
    try:
        schema = pq.read_schema(path)
        table = pq.read_table(path, columns=[c for c in RESULT_COLUMNS if c in schema.names])
    except (OSError, ValueError) as exc:
        raise RunNotFound(f"{path} cannot be read as Parquet ({exc}); rebuild it with "
                          "kontext-batch report, or re-run the run") from None
    if "row_id" not in table.column_names or "status" not in table.column_names:
        raise RunNotFound(f"{path} has no row_id/status columns; it is not a results table")
    flags = page_flags(run_dir) if "flags" not in table.column_names else {}
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    rows = []
    for i in range(table.num_rows):
        def get(name: str, i: int = i) -> Any:
            values = columns.get(name)
            return None if values is None else values[i]
        row_id = str(get("row_id"))
        rows.append(ReviewRow(
            index=i, row_id=row_id, key=_text(get("key")), status=str(get("status")),
            output_uri=_text(get("output_uri")), product_id=_text(get("product_id")),
            variant=_text(get("variant")), instruction=str(get("instruction") or ""),
            seed=None if get("seed") is None else int(get("seed")), image=_text(get("image")),
            reason=_text(get("reason")), flags=tuple(get("flags") or flags.get(row_id, ())),
            title=_text(get("meta_product")), variant_sku=_text(get("meta_variant_sku")),
            truncated=get("truncated") is True, notes=_text(get("notes")),
            cost=None if get("cost") is None else float(get("cost")),
            redo_of=_text(get("meta_redo_of"))))
    return rows


def load_review_rows(run_dir: Path) -> list[ReviewRow]:
    """The run's rows, then the candidates its redos made (pipeline.redo: the finished runs
    RUN_DIR/redo.json lists), numbered on: what its review shows and publish chooses from."""
    from pipeline.redo import read_links

    rows = load_rows(run_dir)
    known = {r.row_id for r in rows}
    for link in read_links(run_dir):
        follow_up = Path(link["run_dir"])
        if not (follow_up / "results.parquet").is_file() or follow_up == run_dir:
            continue  # not finished yet: its rows come once it has
        for row in load_rows(follow_up):
            if row.row_id in known or not row.redo_of:
                continue
            known.add(row.row_id)
            rows.append(replace(row, index=len(rows)))
    return rows


_DATA_BLOCK = re.compile(r'<script type="application/json" id="review-data">(.*?)</script>', re.S)


def page_flags(run_dir: Path) -> dict[str, list[str]]:
    """row_id -> flags from the run's review.html data block ({} when there is no page)."""
    try:
        text = (run_dir / "review.html").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = _DATA_BLOCK.search(text)
    if not match:
        return {}
    try:
        data = json.loads(match.group(1))
    except ValueError:
        return {}
    return {str(r.get("row_id")): [str(f) for f in r.get("flags") or []]
            for r in data.get("rows", []) if isinstance(r, dict)}


def manifest_of(target: RunTarget) -> str | None:
    """The run's manifest path (config.json, else the ledger's first run-start)."""
    manifest = target.config.get("manifest")
    if isinstance(manifest, str):
        return manifest
    from pipeline.ledger import read_ledger

    for rec in read_ledger(target.run_dir / "ledger.jsonl"):
        if rec.get("type") == "run-start":
            return _text(rec.get("manifest"))
    return None
