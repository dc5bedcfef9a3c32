"""``kontext-batch publish``: copy a run's approved images out as a shop feed.

Writes, under the target (a folder or any pyarrow filesystem URI, s3://bucket/prefix, as the
store does):

    <product_id>/<variant>[-<k>].<ext>   one file per published row (k = 2, 3, ... for the
                                         second, third ... row of the same product and variant
                                         in the run, in manifest order)
    feed.csv                             Shopify product-CSV image rows: Handle, Image Src,
                                         Image Position, Image Alt Text (+ Variant SKU and
                                         Variant Image where the manifest has meta_variant_sku)
    published.json                       per file: row id, cache key, sha256, source,
                                         instruction, seed, decision, reviewer, ...

Which rows: those whose last decision (OUT/decisions.jsonl) is approve; with ``all_done`` every
done or cache-hit row except those rejected or sent back for redo. Of a chain of edits (rows
whose image is ``row:<row_id>``, pipeline.chains) only the final step is published, unless
``all_steps``: the earlier steps are working images, and they are left out of the
<variant>-<k> numbering too. Idempotent: a file already
at its path with the same bytes is left alone, and feed.csv / published.json are rewritten only
when their content changes, so publishing again writes nothing. A different file at a target
path is refused (nothing written) unless ``overwrite``. A product id or variant that is not one
plain path segment (``..``, ``/``, an absolute path, NUL or other control characters) is refused
before anything is written. Each publish that wrote something appends a ``publish`` record to
the run's ledger.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.fs as pafs

from pipeline.chains import parent_row_id
from pipeline.review.decisions import Decision, read_decisions
from pipeline.review.runs import ReviewRow, RunTarget, load_review_rows
from pipeline.store import filesystem_for

FEED = "feed.csv"
PUBLISHED = "published.json"
FEED_COLUMNS = ("Handle", "Image Src", "Image Position", "Image Alt Text")
VARIANT_COLUMNS = ("Variant SKU", "Variant Image")
MAX_SEGMENT = 200
EXTENSIONS = {"png": "png", "jpg": "jpg", "jpeg": "jpg", "webp": "webp"}


class PublishError(Exception):
    """Publishing refused or stopped; the message names the thing, the reason and the fix."""


@dataclass
class Planned:
    row: ReviewRow
    rel: str  # path under the target
    ext: str
    decision: Decision | None


@dataclass
class PublishResult:
    target: str
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)
    index_written: list[str] = field(default_factory=list)  # feed.csv / published.json

    @property
    def wrote_anything(self) -> bool:
        return bool(self.written or self.overwritten or self.index_written)


def segment_problem(value: str | None, what: str) -> str | None:
    """Why ``value`` cannot be one path segment under the target (None when it can)."""
    if value is None or value == "":
        return f"has no {what}; publish names files <product_id>/<variant>, so set both in the manifest"
    if value in (".", ".."):
        return f"{what} {value!r} would leave its folder; rename it in the manifest"
    if "/" in value or "\\" in value:
        return f"{what} {value!r} holds a path separator (an absolute or nested path); use a plain name"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{what} {value!r} holds NUL or another control character; use printable text"
    if value != value.strip() or len(value) > MAX_SEGMENT:
        return f"{what} {value!r} has outer spaces or is over {MAX_SEGMENT} characters; shorten or trim it"
    return None


def chain_steps(rows: list[ReviewRow]) -> set[str]:
    """Row ids another row of the run edits further (image ``row:<row_id>``): a chain's
    earlier steps, not its final one."""
    return {parent for row in rows if (parent := parent_row_id(row.image)) is not None}


def select_rows(rows: list[ReviewRow], decisions: dict[str, Decision], all_done: bool,
                all_steps: bool = False) -> list[tuple[ReviewRow, Decision | None]]:
    """One image per slot (a reviewed row and the candidates its redos made): the approved one
    (the latest approval when several are); with ``all_done`` else the first undecided one.
    A chain's earlier steps have no slot unless ``all_steps``."""
    earlier = set() if all_steps else chain_steps(rows)
    slots: dict[str, list[ReviewRow]] = {}
    for row in rows:
        if row.reviewable and (row.redo_of or row.row_id) not in earlier:
            slots.setdefault(row.redo_of or row.row_id, []).append(row)
    chosen = []
    for images in slots.values():
        approved = [(r, d) for r in images
                    if (d := decisions.get(r.key or "")) is not None and d.decision == "approve"]
        undecided = [(r, None) for r in images if decisions.get(r.key or "") is None]
        if approved:
            chosen.append(max(approved, key=lambda rd: rd[1].ts))
        elif all_done and undecided:
            chosen.append(undecided[0])
    return sorted(chosen, key=lambda rd: rd[0].index)


def plan(rows: list[ReviewRow], decisions: dict[str, Decision], all_done: bool,
         all_steps: bool = False) -> list[Planned]:
    """Target paths of the rows to publish; PublishError listing every unusable name first."""
    chosen = select_rows(rows, decisions, all_done, all_steps)
    earlier = set() if all_steps else chain_steps(rows)
    problems = []
    for row, _ in chosen:
        for value, what in ((row.product_id, "product_id"), (row.variant, "variant")):
            problem = segment_problem(value, what)
            if problem:
                problems.append(f"row {row.row_id}: {problem}")
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise PublishError(f"nothing published: {len(problems)} row(s) cannot be named safely:\n  "
                           f"{shown}{more}")
    position: dict[tuple[str, str], int] = defaultdict(int)
    rank: dict[str, int] = {}
    for row in rows:  # numbered over every row of the pair, so approvals never shift names
        if row.product_id is not None and row.variant is not None and row.redo_of is None \
                and row.row_id not in earlier:
            position[(row.product_id, row.variant)] += 1
            rank[row.row_id] = position[(row.product_id, row.variant)]
    planned = []
    for row, decision in chosen:
        ext = EXTENSIONS.get((row.output_uri or "").rsplit(".", 1)[-1].lower(), "png")
        k = rank.get(row.redo_of or row.row_id, 1)  # a candidate takes its slot's name
        name = f"{row.variant}{'' if k == 1 else f'-{k}'}.{ext}"
        planned.append(Planned(row, f"{row.product_id}/{name}", ext, decision))
    return planned


# -- reading outputs --------------------------------------------------------------------------
def read_output(row: ReviewRow) -> bytes:
    """The stored output bytes, checked against the sidecar's sha256 when it records one."""
    fs, path = filesystem_for(row.output_uri or "")
    try:
        with fs.open_input_stream(path) as f:
            data = f.read()
    except (FileNotFoundError, OSError) as exc:
        raise PublishError(f"row {row.row_id}: its output {row.output_uri} cannot be read ({exc}); "
                           "run the same command again to recompute it") from None
    expected = _sidecar_sha(fs, path)
    if expected is not None and expected != hashlib.sha256(data).hexdigest():
        raise PublishError(f"row {row.row_id}: its output {row.output_uri} does not match its "
                           "sidecar's sha256 (damaged); run with --verify-cache to recompute it")
    return data


def _sidecar_sha(fs: pafs.FileSystem, path: str) -> str | None:
    try:
        with fs.open_input_stream(path.rsplit(".", 1)[0] + ".json") as f:
            doc = json.loads(f.read())
    except (FileNotFoundError, OSError, ValueError):
        return None
    sha = doc.get("sha256") or doc.get("image_sha256") if isinstance(doc, dict) else None
    return sha if isinstance(sha, str) else None


# -- the target -------------------------------------------------------------------------------
class Target:
    """The publish target on its pyarrow filesystem; every path is built under ``base``."""

    def __init__(self, location: str) -> None:
        self.location = location
        try:
            self.fs, base = filesystem_for(location)
        except (OSError, ValueError) as exc:
            raise PublishError(f"--to {location!r} is not a folder or filesystem URI pyarrow "
                               f"can open ({exc}); give a folder or s3://bucket/prefix") from None
        self.base = base.rstrip("/")
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def path(self, rel: str) -> str:
        full = os.path.normpath(f"{self.base}/{rel}") if self.local else f"{self.base}/{rel}"
        if not full.startswith(self.base + "/") or ".." in rel.split("/"):
            raise PublishError(f"{rel!r} would be written outside {self.location}; refused")
        return full

    def read(self, rel: str) -> bytes | None:
        path = self.path(rel)
        info = self.fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type != pafs.FileType.File:
            raise PublishError(f"{self.location}/{rel} exists and is not a file; move it away")
        with self.fs.open_input_stream(path) as f:
            return f.read()

    def size(self, rel: str) -> int | None:
        info = self.fs.get_file_info(self.path(rel))
        return int(info.size or 0) if info.type == pafs.FileType.File else None

    def write(self, rel: str, data: bytes) -> None:
        """Atomically where the filesystem allows (local: temp + fsync + rename)."""
        path = self.path(rel)
        try:
            self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
            if not self.local:
                with self.fs.open_output_stream(path) as out:  # one put: atomic on object stores
                    out.write(data)
                return
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            try:
                with open(tmp, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        except OSError as exc:
            raise PublishError(f"cannot write {self.location}/{rel}: {exc.strerror or exc}; give a "
                               "writable --to (or fix its permissions)") from None


# -- feed and record ---------------------------------------------------------------------------
def entry(p: Planned, data: bytes, run_id: str, src: str) -> dict[str, Any]:
    d = p.decision
    return {"path": p.rel, "src": src, "row_id": p.row.row_id, "run_id": run_id, "key": p.row.key,
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "product_id": p.row.product_id, "variant": p.row.variant, "title": p.row.title,
            "variant_sku": p.row.variant_sku, "source": p.row.image,
            "instruction": p.row.instruction, "seed": p.row.seed,
            "decision": d.decision if d else "all-done", "reviewer": d.reviewer if d else None,
            "decided_at": d.ts if d else None, "note": d.note if d else None,
            "redo_of": p.row.redo_of}


def feed_csv(entries: Iterable[dict[str, Any]]) -> bytes:
    entries = sorted(entries, key=lambda e: (e["product_id"], e["path"]))
    variants = any(e.get("variant_sku") for e in entries)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FEED_COLUMNS + (VARIANT_COLUMNS if variants else ()))
    position: dict[str, int] = defaultdict(int)
    for e in entries:
        position[e["product_id"]] += 1
        alt = f"{e.get('title') or e['product_id']} ({e['variant']})"
        row = [e["product_id"], e["src"], position[e["product_id"]], alt]
        if variants:
            row += [e.get("variant_sku") or "", e["src"] if e.get("variant_sku") else ""]
        writer.writerow([_csv_safe(v) for v in row])
    return out.getvalue().encode("utf-8")


def _csv_safe(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (=, +, -, @) gets a leading quote."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def published_json(entries: Iterable[dict[str, Any]]) -> bytes:
    doc = {"v": 1, "images": sorted(entries, key=lambda e: e["path"])}
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _earlier_entries(target: Target) -> dict[str, dict[str, Any]]:
    """What earlier publishes into this target recorded (kept unless replaced now)."""
    try:
        data = target.read(PUBLISHED)
    except (OSError, PublishError):
        data = None
    if not data:
        return {}
    try:
        doc = json.loads(data)
        return {e["path"]: e for e in doc.get("images", []) if isinstance(e, dict) and "path" in e}
    except (ValueError, AttributeError, TypeError):
        raise PublishError(f"{target.location}/{PUBLISHED} is not the JSON publish writes; move "
                           "it away or publish to another --to") from None


# -- the command's body -----------------------------------------------------------------------
def publish(run: RunTarget, to: str, *, all_done: bool = False, overwrite: bool = False,
            base_url: str | None = None, all_steps: bool = False) -> PublishResult:
    """Publish ``run``'s approved images to ``to``; PublishError (nothing written) on refusal."""
    from pipeline.runlock import try_lock

    lock = try_lock(run.run_dir)
    if lock is None:
        raise PublishError(f"run {run.run_id} is in progress ({run.run_dir} is locked); publish "
                           "it once it has finished")
    try:
        return _publish(run, to, all_done, overwrite, base_url, all_steps)
    finally:
        lock.release()


def _publish(run: RunTarget, to: str, all_done: bool, overwrite: bool,
             base_url: str | None, all_steps: bool = False) -> PublishResult:
    rows = load_review_rows(run.run_dir)
    planned = plan(rows, read_decisions(run.out_dir), all_done, all_steps)
    target = Target(to)
    result = PublishResult(target=to)
    # First pass: read and check every output, compare with what the target holds; refuse
    # before writing anything.
    todo: list[Planned] = []
    entries = _earlier_entries(target)
    ours = {rel: e.get("sha256") for rel, e in entries.items()}  # what earlier publishes wrote
    clashes = []
    for p in planned:
        data = read_output(p.row)
        src = f"{base_url.rstrip('/')}/{p.rel}" if base_url else p.rel
        entries[p.rel] = entry(p, data, run.run_id, src)
        there = target.read(p.rel)
        if there is None:
            todo.append(p)
        elif there == data:
            result.unchanged.append(p.rel)
        elif overwrite or _published_here(ours.get(p.rel), there):
            todo.append(p)
            result.overwritten.append(p.rel)
        else:
            clashes.append(p.rel)
    if clashes:
        raise PublishError(f"nothing published: {len(clashes)} target path(s) already hold a "
                           f"different file, e.g. {to.rstrip('/')}/{clashes[0]}; publish to an "
                           "empty --to, or pass --overwrite to replace them")
    for p in todo:
        target.write(p.rel, read_output(p.row))
        if p.rel not in result.overwritten:
            result.written.append(p.rel)
    for name, data in ((FEED, feed_csv(entries.values())), (PUBLISHED, published_json(entries.values()))):
        if target.read(name) != data:
            target.write(name, data)
            result.index_written.append(name)
    if result.wrote_anything:
        _record(run, result, len(planned), all_done)
    return result


def _published_here(sha: str | None, there: bytes) -> bool:
    """The file at a target path is the one an earlier publish wrote (published.json's sha256):
    a newer approval for the same product and variant (a redo, the next night's edit) replaces
    it. Anything else there is someone else's file: a clash."""
    return bool(sha) and hashlib.sha256(there).hexdigest() == sha


def _record(run: RunTarget, result: PublishResult, images: int, all_done: bool) -> None:
    from pipeline.ledger import SCHEMA_VERSION, LedgerWriter

    rec = {"v": SCHEMA_VERSION, "type": "publish", "run_id": run.run_id, "ts": time.time(),
           "target": result.target, "images": images, "written": len(result.written),
           "overwritten": len(result.overwritten), "unchanged": len(result.unchanged),
           "selection": "all-done" if all_done else "approved"}
    with LedgerWriter(run.run_dir / "ledger.jsonl", run.run_id) as ledger:
        ledger.append([rec])
