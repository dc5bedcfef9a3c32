"""``kontext-batch redo``: make the rejected images again and bring them back to the same review.

Which images: a *slot* is one row of the reviewed run (one product x variant image in the shop);
its images are that row's output and the candidates earlier redos made for it. A slot is redone
when every one of its images has a decision and none is *approve* (the last one says reject or
redo). Slots with an image still waiting, or an approved one, are left alone, so running redo
twice does not make a second round before the first was reviewed.

What is made: for each slot, ``seeds`` new rows with seeds the slot has not used (counting up
from the highest), or, with ``instruction_from="note"``, one row with the reviewer's note as the
instruction (the slot's latest reject/redo note) and the original seed (new seeds with
``seeds``). The rows form a follow-up manifest, RUN_DIR/redo/<n>.parquet (image paths absolute,
product_id, variant, meta_redo_of = the slot's row id, meta_redo_run = the reviewed run's id,
the catalog's meta_product / meta_variant_sku), run with the reviewed run's settings into the
same OUT, so its outputs share the store and the decisions log.

Chained rows (image ``row:<parent>``): the new rows edit the same parent output. The follow-up
manifest carries the parent (and its parents, up to a plain source) as *carrier* rows with the
reviewed run's row ids, instructions, seeds and sampler columns, so they are cache hits of the
outputs already made (computed again only when their source changed since) and the new rows
name them as ``row:<parent>``; carriers have no ``meta_redo_of``, so no review shows them as
candidates.

How they come back: RUN_DIR/redo.json lists the follow-up runs; the review of RUN_DIR (server,
publish) reads their rows as candidates for their slots (pipeline.review.runs.load_review_rows),
and publish writes a slot's approved image (the latest approval when several are) under the
slot's own name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.chains import parent_row_id
from pipeline.review.decisions import Decision, read_decisions
from pipeline.review.runs import ReviewRow, RunTarget, load_review_rows, manifest_of

REDO_FILE = "redo.json"
REDO_DIR = "redo"
NOTE = "note"
ROW_OVERRIDES = ("width", "height", "steps", "guidance", "output_format")
# RunConfig fields a follow-up run takes from the reviewed run's settings (the rest are its own)
NOT_INHERITED = ("manifest", "out", "run_id", "image_roots", "image_roots_setting")


class RedoError(ValueError):
    """A redo that cannot be made; the message names the rows, the reason and the fix."""


@dataclass
class RedoPlan:
    target: RunTarget
    rows: list[dict[str, Any]] = field(default_factory=list)  # the follow-up manifest's rows
    slots: int = 0  # slots redone
    waiting: int = 0  # slots left alone: an image waits for review
    approved: int = 0  # slots left alone: an image is approved
    carriers: int = 0  # rows carrying a chained row's parent steps (cache hits, no new image)

    @property
    def new_images(self) -> int:
        return len(self.rows) - self.carriers


def slot_of(row: ReviewRow) -> str:
    return row.redo_of or row.row_id


def _slots(rows: list[ReviewRow]) -> dict[str, list[ReviewRow]]:
    slots: dict[str, list[ReviewRow]] = {}
    for row in rows:
        slots.setdefault(slot_of(row), []).append(row)
    return slots


def _verdict(images: list[ReviewRow], decisions: dict[str, Decision]) -> str:
    """approved, waiting, redo (every image decided, none approved) or none (no image)."""
    shown = [r for r in images if r.reviewable]
    if not shown:
        return "none"
    verdicts = [decisions.get(r.key or "") for r in shown]
    if any(d is not None and d.decision == "approve" for d in verdicts):
        return "approved"
    return "waiting" if any(d is None for d in verdicts) else "redo"


def _new_seeds(images: list[ReviewRow], count: int) -> list[int]:
    used = {r.seed for r in images if r.seed is not None}
    seeds, seed = [], max(used, default=-1)
    while len(seeds) < count:
        seed += 1
        if seed not in used:
            seeds.append(seed)
    return seeds


def _latest_note(images: list[ReviewRow], decisions: dict[str, Decision]) -> str:
    noted = [d for r in images if (d := decisions.get(r.key or "")) and d.note.strip()]
    return max(noted, key=lambda d: d.ts).note.strip() if noted else ""


def plan_redo(target: RunTarget, seeds: int | None = None,
              instruction_from: str | None = None) -> RedoPlan:
    """The follow-up rows of ``target``'s rejected slots (see the module docstring)."""
    if seeds is not None and not 1 <= seeds <= 100:
        raise RedoError(f"--seeds {seeds}: give 1-100 new seeds per rejected image")
    if instruction_from not in (None, NOTE):
        raise RedoError(f"--instruction-from {instruction_from!r}: the only source is 'note' "
                        "(the reviewer's note on the reject/redo decision)")
    rows = load_review_rows(target.run_dir)
    decisions = read_decisions(target.out_dir)
    resolve = _resolver(target)
    overrides = _row_overrides(target)
    plan = RedoPlan(target)
    by_id = {r.row_id: r for r in rows if not r.redo_of}
    carried: set[str] = set()
    missing_notes = []
    for slot, images in _slots(rows).items():
        verdict = _verdict(images, decisions)
        plan.waiting += verdict == "waiting"
        plan.approved += verdict == "approved"
        if verdict != "redo":
            continue
        origin = images[0]
        instruction, row_seeds = origin.instruction, _new_seeds(images, seeds or 1)
        if instruction_from == NOTE:
            instruction = _latest_note(images, decisions)
            if not instruction:
                missing_notes.append(slot)
                continue
            tried = {(r.instruction, r.seed) for r in images}
            if seeds is None and (instruction, origin.seed) not in tried:
                row_seeds = [origin.seed if origin.seed is not None else 0]
        plan.slots += 1
        parents = _carriers(origin, by_id, carried, overrides, resolve)
        plan.rows += parents
        plan.carriers += len(parents)
        for n, seed in enumerate(row_seeds, start=len(images)):
            plan.rows.append({
                **overrides.get(origin.index, {}),
                "row_id": f"{slot}~r{n}", "image": _image(origin, resolve), "instruction": instruction,
                "seed": int(seed), "product_id": origin.product_id, "variant": origin.variant,
                "meta_product": origin.title, "meta_variant_sku": origin.variant_sku,
                "meta_redo_of": slot, "meta_redo_run": target.run_id})
    if missing_notes:
        shown = ", ".join(missing_notes[:10]) + (" ..." if len(missing_notes) > 10 else "")
        raise RedoError(f"--instruction-from note: {len(missing_notes)} rejected image(s) have no "
                        f"note to use as the instruction ({shown}); decide them again with the "
                        "corrected instruction as the note, or leave --instruction-from out for "
                        "new seeds")
    return plan


def _image(row: ReviewRow, resolve: Callable[[str | None], str]) -> str:
    """A new row's image: the same parent row's output for a chained row, else the source."""
    return row.image if parent_row_id(row.image) else resolve(row.image)  # type: ignore[return-value]


def _carriers(origin: ReviewRow, by_id: dict[str, ReviewRow], carried: set[str],
              overrides: dict[int, dict[str, Any]],
              resolve: Callable[[str | None], str]) -> list[dict[str, Any]]:
    """The reviewed run's ancestors of a chained row, oldest first, as rows of the follow-up
    manifest (each once per manifest: ``carried`` holds those already added)."""
    chain: list[ReviewRow] = []
    parent = parent_row_id(origin.image)
    while parent is not None and parent not in carried:
        row = by_id.get(parent)
        if row is None:
            raise RedoError(f"row {origin.row_id!r} edits the output of row {parent!r}, which "
                            "the reviewed run's results do not hold; rebuild them with "
                            "kontext-batch report RUN_DIR")
        carried.add(parent)
        chain.append(row)
        parent = parent_row_id(row.image)
    return [{**overrides.get(row.index, {}), "row_id": row.row_id, "image": _image(row, resolve),
             "instruction": row.instruction, "seed": row.seed, "product_id": row.product_id,
             "variant": row.variant, "meta_product": row.title,
             "meta_variant_sku": row.variant_sku} for row in reversed(chain)]


def _resolver(target: RunTarget) -> Callable[[str | None], str]:
    """Source path as the reviewed run resolved it (absolute), by the run's own rule."""
    from pipeline.reports.review_build import source_policy

    manifest = manifest_of(target)
    policy = source_policy(target.run_dir, manifest)
    base = Path(manifest).parent if manifest and "://" not in manifest else target.run_dir

    def resolve(ref: str | None) -> str:
        if not ref:
            raise RedoError("a rejected row has no source image in results.parquet; rebuild the "
                            "run's results with kontext-batch report")
        if policy is not None:
            return str(policy(ref))
        return ref if "://" in ref or os.path.isabs(ref) else str((base / ref).resolve())
    return resolve


def _row_overrides(target: RunTarget) -> dict[int, dict[str, Any]]:
    """Per-row sampler columns of the reviewed run's manifest (width, steps, ...), by row index;
    {} when the manifest has none or is gone (the run's settings then apply)."""
    manifest = manifest_of(target)
    if not manifest or "://" in manifest or not Path(manifest).is_file():
        return {}
    try:
        names = [c for c in ROW_OVERRIDES if c in pq.read_schema(manifest).names]
        if not names:
            return {}
        table = pq.read_table(manifest, columns=names).to_pylist()
    except (OSError, ValueError, pa.ArrowException):
        return {}
    return {i: {k: v for k, v in row.items() if v is not None} for i, row in enumerate(table)}


def write_manifest(plan: RedoPlan) -> Path:
    """RUN_DIR/redo/<n>.parquet (n counts up; written atomically)."""
    folder = plan.target.run_dir / REDO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(p.stem) for p in folder.glob("*.parquet") if p.stem.isdigit()), default=0)
    path = folder / f"{n}.parquet"
    columns = sorted({k for row in plan.rows for k in row})
    table = pa.Table.from_pylist([{k: row.get(k) for k in columns} for row in plan.rows])
    tmp = folder / f".{n}.parquet.tmp-{os.getpid()}"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def run_config(plan: RedoPlan, manifest: Path, **overrides: Any) -> Any:
    """A RunConfig for the follow-up manifest: the reviewed run's settings, its OUT and store,
    its image folder (the manifest's) and image roots allowed."""
    from pipeline.runner import RunConfig

    target = plan.target
    settings = target.config.get("settings") if isinstance(target.config.get("settings"), dict) else {}
    names = {f.name for f in fields(RunConfig)} - set(NOT_INHERITED)
    inherited = {k: v for k, v in settings.items() if k in names}
    inherited.pop("numerics", None)
    plan_record = inherited.get("memory_plan")
    if isinstance(plan_record, dict):  # config.json records the resolved plan: rerun under it
        inherited["memory_plan"] = plan_record.get("name")
    if isinstance(target.config.get("model"), str):
        inherited["model"] = target.config["model"]
    original = manifest_of(target)
    roots = [str(Path(original).parent)] if original and "://" not in original else []
    roots += [str(r) for r in settings.get("image_roots") or []]
    inherited.update(store=target.store_root, **overrides)
    return RunConfig(manifest=str(manifest), out=str(target.out_dir), image_roots=roots or None,
                     **inherited)


def link(target: RunTarget, run_dir: Path, manifest: Path, rows: int) -> None:
    """Record a follow-up run in RUN_DIR/redo.json (atomically; each run once)."""
    path = target.run_dir / REDO_FILE
    doc = read_links(target.run_dir)
    entry = {"run_id": run_dir.name, "run_dir": str(run_dir), "manifest": str(manifest), "rows": rows}
    doc = [e for e in doc if e.get("run_id") != run_dir.name] + [entry]
    tmp = path.with_name(f".{REDO_FILE}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps({"v": 1, "runs": doc}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_links(run_dir: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads((run_dir / REDO_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    runs = doc.get("runs") if isinstance(doc, dict) else None
    return [e for e in runs or [] if isinstance(e, dict) and isinstance(e.get("run_dir"), str)]


def redo(target: RunTarget, *, seeds: int | None = None, instruction_from: str | None = None,
         runner: Callable[..., Any] | None = None, **overrides: Any) -> tuple[RedoPlan, Any]:
    """Plan, write and run the follow-up manifest; (plan, RunSummary or None when nothing to do).
    ``runner`` (default pipeline.runner.run_batch) takes the RunConfig; ``overrides`` change
    RunConfig fields (address, progress, ...)."""
    from pipeline.runlock import try_lock

    lock = try_lock(target.run_dir)
    if lock is None:
        raise RedoError(f"run {target.run_id} is in progress ({target.run_dir} is locked); redo "
                        "its rejected images once it has finished")
    try:
        plan = plan_redo(target, seeds, instruction_from)
    finally:
        lock.release()
    if not plan.rows:
        return plan, None
    manifest = write_manifest(plan)
    if runner is None:
        from pipeline.runner import run_batch as runner
    summary = runner(run_config(plan, manifest, **overrides))
    link(target, Path(summary.run_dir), manifest, plan.new_images)
    return plan, summary
