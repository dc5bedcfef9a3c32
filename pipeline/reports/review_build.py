"""Build a run's review material: thumbnails, heat maps, flags, contact sheets and review.html.

Only for the rows chosen for review (rows.select_review_rows: generated or failed in this run,
under a cap); cache hits are never decoded here, so a night of hits reads no stored output.

Each output is decoded once (JPEGs at reduced scale) and used for its thumbnail, its heat map and
its sheet cell; each source is decoded once per group. Change analysis runs on images fitted into
the analysis size (never enlarged); what a reviewer sees (thumbnails, source thumbnails, heat
maps, sheet cells) is scaled to fill the display box (images.fill), so a model whose outputs are
smaller than their sources still shows them at the source's size. Files written under RUN_DIR:

    review/thumbs/<row>.jpg   review/heat/<row>.png   review/sources/<source>.jpg
    sheets/<group>[-pN].png   review.html  review.js  review.css
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from PIL import Image
from tqdm import tqdm

from pipeline.cache import normalise_instruction
from pipeline.provenance import ProvenanceError, provenance_from_image

from .chain_strips import Chains, strip_sheets
from .changes import ReviewThresholds, compare_to_source
from .images import fill, fit, locate, open_image, safe_name
from .report_render import money
from .rows import ReviewScope, RowView
from .sheets import Cell, SheetLayout, write_sheets


@dataclass
class RowReview:
    view: RowView
    flags: list[str] = field(default_factory=list)
    mean_diff: float | None = None
    changed_fraction: float | None = None
    thumb: str | None = None  # URL paths relative to the run directory
    heat: str | None = None
    source_thumb: str | None = None
    output_link: str | None = None
    sheet: str | None = None
    provenance: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    chain: str | None = None  # its place in a chain of edits: "step 2 of 3: a -> [b] -> c"

    @property
    def failed(self) -> bool:
        return self.view.status == "failed"

    @property
    def flagged(self) -> bool:
        return bool(self.flags)


@dataclass
class SheetGroup:
    title: str
    paths: list[str]  # relative URL paths
    rows: int


@dataclass
class ReviewBuild:
    rows: list[RowReview]
    sheets: list[SheetGroup]
    notes: list[str]
    scope: ReviewScope | None = None  # which of the run's rows these are (None: all of them)
    decisions: dict[str, dict[str, Any]] = field(default_factory=dict)  # row_id -> last decision
    decision_counts: dict[str, int] = field(default_factory=dict)  # decisions_view.page_decisions


def url_path(path: Path, run_dir: Path) -> str:
    """A relative URL from the run directory to `path` (quoted; safe in href/src)."""
    rel = os.path.relpath(path, run_dir)
    return quote(rel.replace(os.sep, "/"))


class _SourceCache:
    """Decoded source thumbnails (fitted, for analysis), by reference; small LRU (variants of a
    product share one). The saved JPEG is the display version (filled to the box)."""

    def __init__(self, bases: list[Path], run_dir: Path, size: int, limit: int = 64,
                 policy: SourcePolicy | None = None, max_pixels: int | None = None,
                 chains: Chains | None = None) -> None:
        self.bases, self.run_dir, self.size, self.limit = bases, run_dir, size, limit
        self.policy, self.max_pixels = policy, max_pixels
        self.chains = chains or Chains()
        self.lock = threading.Lock()
        self.items: OrderedDict[str, tuple[Image.Image | None, tuple[int, int] | None, str | None, str | None]] = OrderedDict()

    def get(self, ref: str | None) -> tuple[Image.Image | None, tuple[int, int] | None, str | None, str | None]:
        """(thumbnail, original size, thumbnail URL, problem)."""
        key = ref or ""
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        try:
            parent_output = self.chains.source_of(ref)  # a chained row's source: in the store
            if parent_output is not None:
                located = locate(parent_output, [self.run_dir.parent.parent, self.run_dir])
            else:
                if self.policy is not None:
                    ref = self.policy(ref)  # the run's own path rules: refused -> ValueError
                located = locate(ref, self.bases)
            img, original = open_image(located, draft_size=self.size,
                                       max_pixels=self.max_pixels)
            thumb = fit(as_model_sees(img), self.size)
            path = self.run_dir / "review" / "sources" / f"{safe_name(key)}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            fill(thumb, self.size).save(path, "JPEG", quality=85)
            entry = (thumb, original, url_path(path, self.run_dir), None)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            entry = (None, None, None, f"source {key or '(none)'} unavailable: {exc}")
        with self.lock:  # two threads may decode the same source once each; harmless
            self.items[key] = entry
            if len(self.items) > self.limit:
                self.items.popitem(last=False)
        return entry


def as_model_sees(img: Image.Image) -> Image.Image:
    """The source's colours as the model got them: transparency flattened onto white, wide
    grayscale scaled (pipeline.image_io's rules). A plain convert("RGB") would show the colour
    hidden under transparent pixels (often black), so the page, the sheets and the "unchanged"
    comparison would judge an image the model never saw."""
    from pipeline.image_io import _to_rgb  # the decoder's own rule, not a copy of it

    return img if img.mode == "RGB" else _to_rgb(img, [])


def _caption(view: RowView, currency: str) -> list[str]:
    label = view.variant or view.instruction or "(no instruction)"
    status = {"done": "done", "cache-hit": "cache hit", "failed": "FAILED", "not-run": "not run"}[view.status]
    if view.status == "done":
        cost = f"{money(view.cost, currency)} ({view.busy_seconds:.1f} s model)"
    elif view.status == "cache-hit":
        cost = f"{money(0.0, currency)} (cached)"
    elif view.status == "failed":
        cost = f"{money(view.cost, currency)} spent, {view.error_class or 'error'}"
    else:
        cost = "no cost"
    return [label, f"seed {view.seed} · {status} · {view.attempts} att.", cost]


SourcePolicy = Callable[[str | None], str | None]


def source_policy(run_dir: Path, manifest: str | None) -> SourcePolicy | None:
    """The rule a source must pass to be shown: the one the run read its images by (inside
    the manifest's folder or an --image-root, after '..' and symlinks; remote only under a
    remote root). So a row refused for pointing outside never has that file shown. Returns
    ref -> resolved ref, raising ValueError with the reason; None when the run's manifest is
    unknown (a run folder without config.json)."""
    if not manifest or "://" in manifest or not (run_dir / "config.json").exists():
        return None
    from manifests.paths import ImageResolver, is_remote_uri
    from pipeline.manifest_input import remote_image_problem

    roots = [str(r) for r in _run_settings(run_dir).get("image_roots") or []]
    remote = [r for r in roots if is_remote_uri(r)]
    resolver = ImageResolver(Path(manifest).parent, [r for r in roots if r not in remote])

    def allowed(ref: str | None) -> str | None:
        if ref is None or not str(ref).strip():
            return ref
        resolved = resolver.resolve(str(ref))  # ImageRefError is a ValueError
        problem = remote_image_problem(resolved, remote) if is_remote_uri(resolved) else None
        if problem:
            raise ValueError(problem)
        return resolved
    return allowed


def _run_settings(run_dir: Path) -> dict[str, Any]:
    from pipeline.run_config import read_config_file

    settings = read_config_file(run_dir).get("settings")
    return settings if isinstance(settings, dict) else {}


def source_max_pixels(run_dir: Path) -> int:
    """Sources above the run's --max-pixels were refused by the run: never decoded here."""
    from pipeline.image_io import DEFAULT_MAX_PIXELS

    value = _run_settings(run_dir).get("max_pixels")
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_PIXELS


def source_bases(run_dir: Path, manifest: str | None) -> list[Path]:
    """Folders a relative source path may be relative to: the manifest's, the run's, OUT."""
    out_root = run_dir.parent.parent
    bases = []
    if manifest and "://" not in manifest:
        m = Path(manifest)
        for candidate in ([m] if m.is_absolute() else [Path.cwd() / m, out_root / m, run_dir / m]):
            if candidate.parent.is_dir():  # the manifest itself may have been moved away
                bases.append(candidate.parent)
                break
    bases += [run_dir, out_root, Path.cwd()]
    return bases


@dataclass
class _Context:
    """What every group's build needs (shared by the worker threads)."""

    run_dir: Path
    out_root: Path
    sources: _SourceCache
    thresholds: ReviewThresholds
    layout: SheetLayout
    size: int
    currency: str
    bar: Any
    chains: Chains = field(default_factory=Chains)


def _source_cell(ctx: _Context, image: str | None) -> Cell:
    src_thumb, _, _, src_problem = ctx.sources.get(image)
    return Cell(src_thumb, ["source", image or ""], "source",
                placeholder="NO SOURCE", placeholder_detail=src_problem or "")


def _build_group(ctx: _Context, title: str, members: list[RowView]) -> tuple[list[RowReview], SheetGroup]:
    """Review entries and contact sheet(s) of one product / source image."""
    src_url = ctx.sources.get(members[0].image)[2]
    source_cell = _source_cell(ctx, members[0].image)
    cells: list[Cell] = []
    group_reviews: list[RowReview] = []
    for view in members:
        review, cell_image = _review_row(view, ctx)
        placeholder = {"failed": "FAILED", "not-run": "NOT RUN"}.get(view.status, "MISSING")
        detail = (view.reason or view.error_class or "") if view.status == "failed" else (review.notes[0] if review.notes else "")
        cells.append(Cell(cell_image, _caption(view, ctx.currency), view.status, placeholder=placeholder,
                          placeholder_detail=detail, flags=[f for f in review.flags if f != "failed"]))
        group_reviews.append(review)
        ctx.bar.update(1)
    per_page = ctx.layout.columns * ctx.layout.max_grid_rows - 1
    pages = [min(i // per_page, len(members)) for i in range(len(members))]
    if ctx.chains:  # chains of edits as strips: source -> step 1 -> step 2 ...
        paths, pages = strip_sheets(title, members, cells, lambda v: v.row_id, lambda v: v.image,
                                    lambda image: _source_cell(ctx, image), ctx.chains,
                                    ctx.layout, ctx.run_dir / "sheets", safe_name(title))
    else:
        paths = write_sheets(title, source_cell, cells, ctx.layout, ctx.run_dir / "sheets", safe_name(title))
    urls = [url_path(p, ctx.run_dir) for p in paths]
    for i, review in enumerate(group_reviews):
        review.sheet = urls[min(pages[i], len(urls) - 1)]
        if review.source_thumb is None:
            review.source_thumb = src_url
    return group_reviews, SheetGroup(title, urls, len(members))


def build_review_assets(run_dir: str | Path, views: list[RowView], *, manifest: str | None,
                        currency: str = "USD", thresholds: ReviewThresholds | None = None,
                        layout: SheetLayout | None = None, progress: bool = True,
                        workers: int | None = None) -> ReviewBuild:
    """Thumbnails, heat maps, flags and contact sheets for `views` (review.html is separate):
    the rows rows.select_review_rows chose, so the work follows the review cap, not the run.

    Groups are built on `workers` threads (default: up to 2; Pillow and numpy release the GIL
    while decoding, resizing and encoding, and threads are safe inside a Ray driver, unlike fork)."""
    run_dir = Path(run_dir)
    thresholds = thresholds or ReviewThresholds()
    layout = layout or SheetLayout()
    size = max(thresholds.analysis_size, layout.cell)
    for stale in (run_dir / "review", run_dir / "sheets"):  # ours alone: rebuilt from scratch
        shutil.rmtree(stale, ignore_errors=True)
    for sub in ("thumbs", "heat", "sources"):
        (run_dir / "review" / sub).mkdir(parents=True, exist_ok=True)
    groups: OrderedDict[str, list[RowView]] = OrderedDict()
    for view in views:
        groups.setdefault(view.group, []).append(view)
    workers = workers or min(2, os.cpu_count() or 1)
    with tqdm(total=len(views), desc="review", unit="row", disable=not progress) as bar:
        chains = Chains.from_results(run_dir)
        sources = _SourceCache(source_bases(run_dir, manifest), run_dir, size,
                               policy=source_policy(run_dir, manifest),
                               max_pixels=source_max_pixels(run_dir), chains=chains)
        ctx = _Context(run_dir, run_dir.parent.parent, sources,
                       thresholds, layout, size, currency, bar, chains)
        if workers <= 1 or len(groups) <= 1:
            built = [_build_group(ctx, title, members) for title, members in groups.items()]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="review") as pool:
                futures = [pool.submit(_build_group, ctx, title, members) for title, members in groups.items()]
                built = [f.result() for f in futures]
    reviews = [review for group_reviews, _ in built for review in group_reviews]
    return ReviewBuild(reviews, [sheet for _, sheet in built], [])


def _comparable(key: str, value: Any) -> Any:
    """Provenance carries the instruction as the pipeline normalised it (the cache key's form),
    results.parquet the manifest's raw text: compare both normalised, so whitespace alone is no
    mismatch."""
    if key == "instruction" and isinstance(value, str):
        return normalise_instruction(value)
    return value


def _review_row(view: RowView, ctx: _Context) -> tuple[RowReview, Image.Image | None]:
    """The row's review entry and its display thumbnail (None when there is no output image)."""
    run_dir, size = ctx.run_dir, ctx.size
    review = RowReview(view=view, chain=ctx.chains.trail(view.row_id) if ctx.chains else None)
    if view.status == "failed":
        review.flags.append("failed")
    if view.status not in ("done", "cache-hit"):
        return review, None
    located = locate(view.output_uri, [ctx.out_root, run_dir])
    try:
        output, output_size = open_image(located, draft_size=size)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        review.flags.append("missing-output")
        review.notes.append(f"output unavailable: {exc}")
        return review, None
    try:
        params, prov_problem = provenance_from_image(output), None
    except ProvenanceError as exc:
        params, prov_problem = None, str(exc)
    if located.path is not None:
        review.output_link = url_path(located.path, run_dir)
    review.provenance = params
    if params is None:
        review.flags.append("no-provenance")
        review.notes.append(prov_problem or "no provenance")
    else:
        mismatched = [k for k, want in (("instruction", view.instruction), ("seed", view.seed))
                      if k in params and _comparable(k, params[k]) != _comparable(k, want)]
        if mismatched:
            review.flags.append("provenance-mismatch")
            review.notes.append("embedded " + ", ".join(f"{k}={params[k]!r}" for k in mismatched)
                                + " differ from the row")
    thumb = fit(output, size)  # analysis copy; `shown` is what reviewers see
    shown = fill(thumb, size)
    name = safe_name(view.row_id)
    thumb_path = run_dir / "review" / "thumbs" / f"{name}.jpg"
    shown.save(thumb_path, "JPEG", quality=85)
    review.thumb = url_path(thumb_path, run_dir)
    src_thumb, src_size, src_url, src_problem = ctx.sources.get(view.image)
    review.source_thumb = src_url
    if src_thumb is None:
        review.flags.append("no-source")
        review.notes.append(src_problem or "source unavailable")
        return review, shown
    change = compare_to_source(src_thumb, thumb, ctx.thresholds, source_size=src_size, output_size=output_size)
    review.mean_diff, review.changed_fraction = change.mean_diff, change.changed_fraction
    review.flags += list(change.flags)
    heat_path = run_dir / "review" / "heat" / f"{name}.png"
    fill(change.heat, size).save(heat_path, "PNG", compress_level=1)  # P mode: always NEAREST
    review.heat = url_path(heat_path, run_dir)
    return review, shown
