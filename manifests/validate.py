"""Streaming validation of a manifest, and streaming iteration over its validated rows.

The file is read in record batches (``ParquetFile.iter_batches``), so memory is bounded by
one batch (and one Parquet row group), not by the manifest. The only state that grows with the
manifest is the set of 64-bit row-id hashes (8 bytes a row, manifests.seen) used to find
duplicates across batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from . import rules
from .chains import ChainGraph, ChainLink, build_graph
from .paths import ImageRefError, ImageResolver, manifest_folder
from .problems import ManifestError, Problem
from .schema import COLUMN_SPECS, ManifestRow, SchemaCheck, check_schema, open_manifest
from .seen import SeenHashes, hash64

DEFAULT_BATCH_ROWS = 8192
# Past this many problems validate_manifest only counts them: a manifest broken on every row
# must not need memory proportional to its size just to say so.
DEFAULT_MAX_PROBLEMS = 100_000

_OPTIONAL = ("product_id", "variant", "width", "height", "steps", "guidance", "output_format", "lora")
_RANK = {name: i for i, name in enumerate(COLUMN_SPECS)}
_MISSING = {
    "image": "image is missing (null); give a path (relative to the manifest's folder) or a URI",
    "instruction": (
        f"instruction is missing (null); write the edit to make, {rules.INSTRUCTION_EXAMPLE}"
    ),
    "seed": "seed is missing (null); every row needs an integer seed ≥ 0",
}
_VALUE_CHECKS = {
    "instruction": rules.check_instruction,
    "seed": rules.check_seed,
    "row_id": lambda v: rules.check_label("row_id", v),
    "product_id": lambda v: rules.check_label("product_id", v),
    "variant": lambda v: rules.check_label("variant", v),
    "width": lambda v: rules.check_side("width", v),
    "height": lambda v: rules.check_side("height", v),
    "steps": rules.check_steps,
    "guidance": rules.check_guidance,
    "output_format": rules.check_output_format,
    "lora": rules.check_lora,
}


def derive_row_id(image_ref: str, instruction: str, seed: int) -> str:
    """Content-derived row id: sha256 over (image reference as written, stripped instruction, seed)."""
    payload = json.dumps([image_ref, instruction, seed], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def positional_ids(
    path: str | os.PathLike,
    rows: Iterable[int],
    *,
    data: bytes | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> dict[int, str]:
    """Ids for ``rows`` (row indexes) that have no usable row_id of their own: ``row-N``, or
    ``row-N-2``, ``row-N-3``, ... while a given row_id already has that name, so no two rows of
    the manifest share an id. Derived ids are hex and cannot collide; given ids are read from
    the row_id column (one pass per round; a second round is needed only when the manifest
    itself uses ``row-N`` ids)."""
    ids = {i: f"row-{i}" for i in rows}
    tries = dict.fromkeys(ids, 1)
    pending = set(ids)
    while pending:
        taken = _given_ids_among({ids[i] for i in pending}, path, data, batch_rows)
        pending = {i for i in pending if ids[i] in taken}
        for i in pending:
            tries[i] += 1
            ids[i] = f"row-{i}-{tries[i]}"
    return ids


def _given_ids_among(
    names: set[str], path: str | os.PathLike, data: bytes | None, batch_rows: int
) -> set[str]:
    """Which of ``names`` are given row ids in the manifest."""
    name = os.fspath(path)
    found: set[str] = set()
    if not names:
        return found
    with open_manifest(name, data) as pf:
        if "row_id" not in pf.schema_arrow.names:
            return found
        for batch in _read_batches(pf, name, batch_rows, ["row_id"]):
            for value in batch.column("row_id").to_pylist():
                given = None if value is None else rules.check_label("row_id", value)[0]
                if given in names:
                    found.add(given)
    return found


def _duplicate_reason(row_id: str, derived: bool, earlier: str) -> str:
    if derived:
        return (
            f"this row repeats {earlier}: same image, instruction and seed, so the same derived "
            f"row_id {row_id!r}; drop the repeat, change its seed, or give each row its own row_id"
        )
    return (
        f"row_id {row_id!r} is already used by {earlier}; row ids must be unique across the "
        "whole manifest"
    )


def _effective_ids(columns: dict[str, list], n: int) -> list[tuple[str, bool] | None]:
    """Per row: (row_id, derived?) — the given row_id, else the content-derived one, else None.

    ``columns`` holds normalised values (None where null or invalid) plus "row_id_raw", the
    row_id column as written: an invalid given id must not fall back to a derived one.
    """
    given_raw, given = columns.get("row_id_raw"), columns.get("row_id")
    images, instructions, seeds = (columns.get(c) for c in ("image", "instruction", "seed"))
    can_derive = images is not None and instructions is not None and seeds is not None
    out: list[tuple[str, bool] | None] = []
    for i in range(n):
        if given_raw is not None and given_raw[i] is not None:
            out.append((given[i], False) if given[i] is not None else None)
        elif can_derive and None not in (images[i], instructions[i], seeds[i]):
            out.append((derive_row_id(images[i], instructions[i], seeds[i]), True))
        else:
            out.append(None)
    return out


class _BatchChecker:
    """Checks record batches one after another, remembering row ids across batches."""

    def __init__(
        self,
        schema_check: SchemaCheck,
        resolver: ImageResolver,
        check_images_exist: bool,
    ) -> None:
        self._columns = schema_check.checked_columns
        self._meta = schema_check.meta_columns
        self._resolver = resolver
        self._check_exists = check_images_exist
        self._seen_ids = SeenHashes()
        self.links: list[ChainLink] = []  # chained rows (image row:<row_id>) seen so far

    def check(
        self, batch: pa.RecordBatch, start: int, build_rows: bool
    ) -> tuple[list[ManifestRow], list[Problem], list[tuple[Problem, str, bool]]]:
        """Returns (rows, problems, duplicates as (problem, row_id, derived?)) for one batch."""
        n = batch.num_rows
        found: list[tuple[int, int, Problem]] = []
        raw: dict[str, list] = {}
        clean: dict[str, list] = {}
        for name in self._columns:
            raw[name] = values = batch.column(name).to_pylist()
            if name == "image":
                clean[name] = self._check_images(values, start, found)
                continue
            check = _VALUE_CHECKS[name]
            normalised: list = [None] * n
            for i, value in enumerate(values):
                if value is None:
                    if name in _MISSING:
                        found.append(
                            (start + i, _RANK[name], Problem(start + i, name, _MISSING[name]))
                        )
                    continue
                normalised[i], reason = check(value)
                if reason:
                    found.append((start + i, _RANK[name], Problem(start + i, name, reason)))
            clean[name] = normalised

        # Derived ids use the image reference as written, so they survive moving the folder.
        id_inputs = dict(clean)
        if "row_id" in raw:
            id_inputs["row_id_raw"] = raw["row_id"]
        if "image" in raw:
            id_inputs["image"] = [
                r if c is not None else None
                for r, c in zip(raw["image"], clean["image"], strict=True)
            ]
        ids = _effective_ids(id_inputs, n)
        self._note_links(clean.get("image"), ids, start)
        duplicates: list[tuple[Problem, str, bool]] = []
        with_id = [i for i, entry in enumerate(ids) if entry is not None]
        repeated = self._seen_ids.add([hash64(ids[i][0]) for i in with_id])
        for i in (i for i, rep in zip(with_id, repeated, strict=True) if rep):
            row_id, derived = ids[i]
            # A repeated row (derived id) is not any one column's fault: column None.
            reason = _duplicate_reason(row_id, derived, "an earlier row")
            problem = Problem(start + i, None if derived else "row_id", reason)
            duplicates.append((problem, row_id, derived))
            found.append((start + i, len(_RANK), problem))

        found.sort(key=lambda item: (item[0], item[1]))
        problems = [p for _, _, p in found]
        rows: list[ManifestRow] = []
        if build_rows and not problems:
            meta = {name: batch.column(name).to_pylist() for name in self._meta}
            for i in range(n):
                row_id, _ = ids[i]
                rows.append(
                    ManifestRow(
                        row_index=start + i,
                        row_id=row_id,
                        image=clean["image"][i],
                        instruction=clean["instruction"][i],
                        seed=clean["seed"][i],
                        **{c: clean[c][i] for c in _OPTIONAL if c in clean},
                        meta={name: meta[name][i] for name in self._meta},
                    )
                )
        return rows, problems, duplicates

    def _note_links(
        self, images: list | None, ids: list[tuple[str, bool] | None], start: int
    ) -> None:
        for i, image in enumerate(images or ()):
            parent = rules.chain_parent(image)
            if parent is not None and ids[i] is not None:
                self.links.append(ChainLink(start + i, ids[i][0], parent))

    def _check_images(
        self, refs: list, start: int, found: list[tuple[int, int, Problem]]
    ) -> list[str | None]:
        resolved: list[str | None] = [None] * len(refs)
        rank = _RANK["image"]
        for i, ref in enumerate(refs):
            row = start + i
            if ref is None:
                found.append((row, rank, Problem(row, "image", _MISSING["image"])))
                continue
            if rules.chain_parent(ref) is not None:  # another row's output: no file to resolve
                resolved[i], reason = rules.check_chain_ref(ref)
                if reason:
                    found.append((row, rank, Problem(row, "image", reason)))
                continue
            try:
                path = self._resolver.resolve(ref)
            except ImageRefError as err:
                found.append((row, rank, Problem(row, "image", str(err))))
                continue
            if self._check_exists:
                reason = _missing_file_reason(ref, path, self._resolver.base_dir)
                if reason:
                    found.append((row, rank, Problem(row, "image", reason)))
                    continue
            resolved[i] = path
        return resolved


def _missing_file_reason(ref: str, path: str, base_dir: str) -> str | None:
    """Local files only; remote URIs are read (and their absence reported) by the pipeline."""
    if "://" in path:
        return None
    if os.path.isfile(path):
        return None
    if os.path.isdir(path):
        return f"image {ref!r} is a folder ({path!r}), not an image file"
    return (
        f"image file not found: {path!r} (from {ref!r}); relative paths resolve against the "
        f"manifest's folder {base_dir!r}"
    )


def _empty_manifest(name: str) -> Problem:
    return Problem(
        None,
        None,
        f"manifest {name!r} has no rows; add at least one (image, instruction, seed) row",
    )


def _damaged(name: str, start: int, err: Exception) -> ManifestError:
    return ManifestError(
        f"manifest {name!r} is damaged: its footer reads but the rows from {start} on do not "
        f"({str(err).strip()}); write the file again from its source (a copy cut short or "
        "changed on disk looks like this)",
        name,
    )


def _read_batches(
    pf: pq.ParquetFile, name: str, batch_rows: int, columns: list[str]
) -> Iterator[pa.RecordBatch]:
    """``pf.iter_batches``, where a page that cannot be decoded is a ManifestError naming the
    file (a valid footer says nothing about the data pages behind it)."""
    start = 0
    batches = pf.iter_batches(batch_size=batch_rows, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as err:
            raise _damaged(name, start, err) from None
        start += batch.num_rows
        yield batch


def _check_batch_rows(batch_rows: int) -> None:
    if not rules.is_int(batch_rows) or batch_rows < 1:
        raise ValueError(f"batch_rows must be a positive integer (got {batch_rows!r})")


def validate_manifest(
    path: str | os.PathLike,
    *,
    data: bytes | None = None,
    image_roots: Sequence[str] | None = None,
    check_images_exist: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_problems: int | None = DEFAULT_MAX_PROBLEMS,
    roots_setting: str = "image_roots",
) -> tuple[int, list[Problem]]:
    """Stream the whole manifest; return (rows_total, problems). Never holds the manifest whole.

    Every problem is reported (row, column, reason), not only the first: whole-file problems
    first, then row problems in row order. After ``max_problems`` (None: no limit) the rest are
    counted and summarised in one final problem. Unreadable files are reported, not raised,
    and so are damaged data pages (every column a run reads is decoded here, meta_* too).
    ``data``: the file's bytes, already read (manifests.schema.read_manifest_bytes).
    ``roots_setting``: what an image outside the allowed roots is told to use (--image-root
    on a command line).
    """
    _check_batch_rows(batch_rows)
    name = os.fspath(path)
    try:
        pf = open_manifest(name, data)
    except ManifestError as err:
        return 0, err.problems
    resolver = ImageResolver(manifest_folder(name), image_roots, roots_setting)
    try:
        with pf:
            return _validate_open(pf, name, resolver, check_images_exist, batch_rows,
                                  max_problems)
    except ManifestError as err:  # a damaged page: the whole file is unusable
        return pf.metadata.num_rows, err.problems


def _validate_open(
    pf: pq.ParquetFile,
    name: str,
    resolver: ImageResolver,
    check_images_exist: bool,
    batch_rows: int,
    max_problems: int | None,
) -> tuple[int, list[Problem]]:
    rows_total = pf.metadata.num_rows
    schema_check = check_schema(pf.schema_arrow)
    problems = list(schema_check.problems)
    if rows_total == 0:
        problems.append(_empty_manifest(name))
    if not schema_check.checked_columns or rows_total == 0:
        return rows_total, problems

    checker = _BatchChecker(schema_check, resolver, check_images_exist)
    duplicate_slots: dict[str, list[tuple[int, bool]]] = {}
    not_listed = 0
    start = 0
    read = schema_check.checked_columns + schema_check.meta_columns
    batches = _read_batches(pf, name, batch_rows, read)
    with tqdm(total=rows_total, unit="row", desc="validating manifest", disable=None) as bar:
        for batch in batches:
            _, batch_problems, duplicates = checker.check(batch, start, build_rows=False)
            dup_of = {id(problem): (rid, derived) for problem, rid, derived in duplicates}
            for problem in batch_problems:
                if max_problems is not None and len(problems) >= max_problems:
                    not_listed += 1
                    continue
                if id(problem) in dup_of:
                    rid, derived = dup_of[id(problem)]
                    duplicate_slots.setdefault(rid, []).append((len(problems), derived))
                problems.append(problem)
            start += batch.num_rows
            bar.update(batch.num_rows)
    if duplicate_slots:
        _name_earlier_rows(pf, name, schema_check, batch_rows, duplicate_slots, problems)
    if checker.links:  # only chained manifests pay for the id pass
        index_of = _first_indexes(pf, name, schema_check, batch_rows)
        problems += build_graph(checker.links, index_of).problems
    if not_listed:
        problems.append(
            Problem(
                None,
                None,
                f"{not_listed} more problems not listed (collection stops after "
                f"{max_problems}); fix the ones above and validate again",
            )
        )
    return rows_total, problems


def _name_earlier_rows(
    pf: pq.ParquetFile,
    name: str,
    schema_check: SchemaCheck,
    batch_rows: int,
    slots: dict[str, list[tuple[int, bool]]],
    problems: list[Problem],
) -> None:
    """Second, light pass (only when duplicates were flagged): name each id's first row, and
    drop flags that were 64-bit hash collisions rather than repeated ids."""
    first: dict[str, int] = {}
    count: dict[str, int] = dict.fromkeys(slots, 0)
    for index, row_id, _ in _scan_ids(pf, name, schema_check, batch_rows):
        if row_id in count:
            count[row_id] += 1
            first.setdefault(row_id, index)
    drop: set[int] = set()
    for row_id, entries in slots.items():
        for index, derived in entries:
            if count[row_id] < 2:
                drop.add(index)
            else:
                old = problems[index]
                reason = _duplicate_reason(row_id, derived, f"row {first[row_id]}")
                problems[index] = Problem(old.row, old.column, reason)
    if drop:
        problems[:] = [p for i, p in enumerate(problems) if i not in drop]


def _scan_ids(
    pf: pq.ParquetFile, name: str, schema_check: SchemaCheck, batch_rows: int
) -> Iterator[tuple[int, str, object]]:
    """Every row's (index, effective row id, image as written), for rows that have an id."""
    wanted = [
        c for c in ("row_id", "image", "instruction", "seed") if c in schema_check.checked_columns
    ]
    start = 0
    for batch in _read_batches(pf, name, batch_rows, wanted):
        columns: dict[str, list] = {}
        for column in wanted:
            values = batch.column(column).to_pylist()
            if column == "row_id":
                columns["row_id_raw"] = values
            if column != "image":
                check = _VALUE_CHECKS[column]
                values = [None if v is None else check(v)[0] for v in values]
            columns[column] = values
        images = columns.get("image") or [None] * batch.num_rows
        for i, entry in enumerate(_effective_ids(columns, batch.num_rows)):
            if entry is not None:
                yield start + i, entry[0], images[i]
        start += batch.num_rows


def _first_indexes(
    pf: pq.ParquetFile, name: str, schema_check: SchemaCheck, batch_rows: int
) -> dict[str, int]:
    first: dict[str, int] = {}
    for index, row_id, _ in _scan_ids(pf, name, schema_check, batch_rows):
        first.setdefault(row_id, index)
    return first


def chain_graph(
    path: str | os.PathLike, *, data: bytes | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
) -> ChainGraph:
    """The chains of a manifest (manifests.chains): child row index -> parent row index, and
    the whole-file problems (missing parents, cycles) validate_manifest reports too. A
    manifest without ``row:`` images costs one read of its image column."""
    _check_batch_rows(batch_rows)
    name = os.fspath(path)
    with open_manifest(name, data) as pf:
        schema_check = check_schema(pf.schema_arrow)
        if "image" not in schema_check.checked_columns or not _has_chain_refs(pf):
            return ChainGraph()
        links, index_of = [], {}
        for index, row_id, image in _scan_ids(pf, name, schema_check, batch_rows):
            index_of.setdefault(row_id, index)
            parent = rules.chain_parent(image)
            if parent is not None:
                links.append(ChainLink(index, row_id, parent))
    return build_graph(links, index_of)


def _has_chain_refs(pf: pq.ParquetFile) -> bool:
    import pyarrow.compute as pc

    images = pf.read(columns=["image"]).column("image")
    if pa.types.is_dictionary(images.type):
        images = images.cast(pa.string())
    return bool(pc.any(pc.starts_with(images, rules.CHAIN_PREFIX)).as_py())


def iter_rows(
    path: str | os.PathLike,
    *,
    data: bytes | None = None,
    image_roots: Sequence[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    roots_setting: str = "image_roots",
) -> Iterator[list[ManifestRow]]:
    """Stream validated rows in batches of at most ``batch_rows``.

    Whole-file problems (unreadable file, missing/unknown/mistyped columns, no rows) raise
    ManifestError right away, at the call. Row problems raise ManifestError (listing every
    problem of that batch) when the first bad batch is reached — earlier batches have already
    been yielded, so call validate_manifest first to refuse a manifest before any work.
    ``data``: the file's bytes, already read (the rows then come from that snapshot).
    """
    _check_batch_rows(batch_rows)
    name = os.fspath(path)
    schema_check = _usable_schema(name, data)
    resolver = ImageResolver(manifest_folder(name), image_roots, roots_setting)
    return _iter_checked(name, data, schema_check, resolver, batch_rows)


# The raw values a SkippedRow carries (those present in the file), as written.
RAW_COLUMNS = ("row_id", "image", "instruction", "seed", "product_id", "variant")


@dataclass(frozen=True)
class SkippedRow:
    """A row ``iter_rows_skipping`` was told to skip: its index and its raw values (the
    RAW_COLUMNS the file has), so a caller can report it."""

    row_index: int
    raw: dict[str, object]


def iter_rows_skipping(
    path: str | os.PathLike,
    skip: Collection[int],
    *,
    data: bytes | None = None,
    image_roots: Sequence[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    roots_setting: str = "image_roots",
) -> Iterator[list[ManifestRow | SkippedRow]]:
    """``iter_rows``, except that the rows in ``skip`` (row indexes: the rows validate_manifest
    found problems in) come as SkippedRow, in manifest order, and the other rows of their
    batch are still validated and built. A problem in any other row raises ManifestError
    (its row numbers are manifest rows): the file changed since it was validated."""
    _check_batch_rows(batch_rows)
    name = os.fspath(path)
    schema_check = _usable_schema(name, data)
    resolver = ImageResolver(manifest_folder(name), image_roots, roots_setting)
    return _iter_skipping(name, data, schema_check, resolver, batch_rows, skip)


def _usable_schema(name: str, data: bytes | None) -> SchemaCheck:
    """The schema check of a file rows can be read from; ManifestError for whole-file problems."""
    with open_manifest(name, data) as pf:
        schema_check = check_schema(pf.schema_arrow)
        problems = list(schema_check.problems)
        if pf.metadata.num_rows == 0:
            problems.append(_empty_manifest(name))
    if problems:
        raise ManifestError(problems, name)
    return schema_check


def _iter_checked(
    name: str,
    data: bytes | None,
    schema_check: SchemaCheck,
    resolver: ImageResolver,
    batch_rows: int,
) -> Iterator[list[ManifestRow]]:
    checker = _BatchChecker(schema_check, resolver, False)
    columns = schema_check.checked_columns + schema_check.meta_columns
    start = 0
    with open_manifest(name, data) as pf:
        for batch in _read_batches(pf, name, batch_rows, columns):
            rows, problems, _ = checker.check(batch, start, build_rows=True)
            if problems:
                raise ManifestError(problems, name)
            start += batch.num_rows
            yield rows


def _iter_skipping(
    name: str,
    data: bytes | None,
    schema_check: SchemaCheck,
    resolver: ImageResolver,
    batch_rows: int,
    skip: Collection[int],
) -> Iterator[list[ManifestRow | SkippedRow]]:
    checker = _BatchChecker(schema_check, resolver, False)
    columns = schema_check.checked_columns + schema_check.meta_columns
    start = 0
    with open_manifest(name, data) as pf:
        raw_columns = [c for c in RAW_COLUMNS if c in pf.schema_arrow.names]
        read = list(dict.fromkeys(columns + raw_columns))
        for batch in _read_batches(pf, name, batch_rows, read):
            yield _skipping_batch(checker, batch.select(columns), batch.select(raw_columns),
                                  start, skip, name)
            start += batch.num_rows


def _skipping_batch(
    checker: _BatchChecker,
    batch: pa.RecordBatch,
    raw: pa.RecordBatch,
    start: int,
    skip: Collection[int],
    name: str,
) -> list[ManifestRow | SkippedRow]:
    """One batch: its rows to skip cut out before the checker builds the rest (the checker
    would refuse the whole batch for them), then both merged back in row order."""
    keep = [i for i in range(batch.num_rows) if start + i not in skip]
    if len(keep) == batch.num_rows:
        rows, problems, _ = checker.check(batch, start, build_rows=True)
        if problems:
            raise ManifestError(problems, name)
        return list(rows)
    built: list[ManifestRow | SkippedRow] = []
    if keep:
        good, problems, _ = checker.check(batch.take(pa.array(keep, type=pa.int64())), 0,
                                          build_rows=True)
        if problems:
            raise ManifestError([replace(p, row=start + keep[p.row]) if p.row is not None
                                 else p for p in problems], name)
        built = [replace(r, row_index=start + keep[j]) for j, r in enumerate(good)]
    values = raw.to_pydict()
    skipped = [SkippedRow(start + i, {c: values[c][i] for c in values})
               for i in range(batch.num_rows) if start + i in skip]
    return sorted([*built, *skipped], key=lambda r: r.row_index)
