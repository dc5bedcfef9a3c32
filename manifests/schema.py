"""The manifest's columns: what each must hold, and the checks on a file's Arrow schema."""

from __future__ import annotations

import difflib
import os
import stat
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from .problems import ManifestError, Problem

META_PREFIX = "meta_"


@dataclass(frozen=True)
class ManifestRow:
    """One validated manifest row, normalised."""

    row_index: int  # 0-based position in the manifest
    row_id: str  # given, or derived from content: sha256(image ref, instruction, seed)[:16]
    image: str  # resolved absolute local path, or URI (s3://…, gs://…) kept as is
    instruction: str  # stripped
    seed: int
    product_id: str | None = None
    variant: str | None = None
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance: float | None = None
    output_format: str | None = None  # "png" | "jpeg" | "webp"
    # LoRA adapters as path[:scale] specs (checked by the pipeline); None: the run's; (): none
    lora: tuple[str, ...] | None = None
    # every meta_* column, carried through (key keeps the meta_ prefix)
    meta: dict[str, object] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: str  # "text", "integer", "whole" (integer, or integral float), "number", "label", "specs"
    required: bool = False


COLUMNS: tuple[ColumnSpec, ...] = (
    ColumnSpec("image", "text", required=True),
    ColumnSpec("instruction", "text", required=True),
    ColumnSpec("seed", "integer", required=True),
    ColumnSpec("row_id", "label"),
    ColumnSpec("product_id", "label"),
    ColumnSpec("variant", "label"),
    ColumnSpec("width", "whole"),
    ColumnSpec("height", "whole"),
    ColumnSpec("steps", "whole"),
    ColumnSpec("guidance", "number"),
    ColumnSpec("output_format", "text"),
    ColumnSpec("lora", "specs"),
)
COLUMN_SPECS = {c.name: c for c in COLUMNS}
REQUIRED_COLUMNS = tuple(c.name for c in COLUMNS if c.required)
ALLOWED_COLUMNS_TEXT = ", ".join(COLUMN_SPECS) + f", and {META_PREFIX}* for free-form data"

_KIND_TEXT = {
    "text": "text (string)",
    "integer": "an integer (int64)",
    "whole": "an integer (int64)",
    "number": "a number (float64)",
    "label": "text (string)",
    "specs": "a list of strings or one string of ';'-separated path[:scale] specs",
}
_REQUIRED_HINT = {
    "image": "a path relative to the manifest's folder, or a URI such as s3://bucket/key.png",
    "instruction": "the edit to make, e.g. 'replace the background with studio white'",
    "seed": "an integer ≥ 0 per row",
}


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def type_fits(kind: str, t: pa.DataType) -> bool:
    if kind == "text":
        return _is_text(t)
    if kind == "integer":
        return pa.types.is_integer(t)
    if kind in ("whole", "number"):
        return pa.types.is_integer(t) or pa.types.is_floating(t)
    if kind == "label":
        return _is_text(t) or pa.types.is_integer(t)
    if kind == "specs":
        lists = pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t)
        return _is_text(t) or (lists and (_is_text(t.value_type) or pa.types.is_null(t.value_type)))
    raise ValueError(f"unknown column kind {kind!r}")


def _type_problem(spec: ColumnSpec, t: pa.DataType) -> Problem:
    if spec.name == "seed" and pa.types.is_floating(t):
        reason = (
            f"seed must be an integer: the column has type {t}, and floats are not accepted "
            "even when whole (3.0); write it as int64, e.g. df['seed'] = df['seed'].astype('int64')"
        )
    else:
        reason = (
            f"column {spec.name!r} has type {t}, but {spec.name} must be {_KIND_TEXT[spec.kind]}; "
            "convert the column before writing the manifest"
        )
    return Problem(None, spec.name, reason)


# Names other tools use for a manifest column: spelling is no guide to these, so difflib
# alone would offer no hint.
_SYNONYMS = {
    "prompt": "instruction",
    "edit_prompt": "instruction",
    "caption": "instruction",
    "text": "instruction",
    "image_path": "image",
    "path": "image",
    "source": "image",
    "id": "row_id",
}


def _unknown_column_problem(name: str) -> Problem:
    key = name.lower()
    matches = [_SYNONYMS[key]] if key in _SYNONYMS else difflib.get_close_matches(
        key, list(COLUMN_SPECS), n=1, cutoff=0.65  # 0.6 offered 'lora' for 'colour'
    )
    hint = f" (did you mean {matches[0]!r}?)" if matches else ""
    return Problem(
        None,
        name,
        f"unknown column {name!r}{hint}; allowed columns: {ALLOWED_COLUMNS_TEXT}. Rename it, "
        f"or prefix it with '{META_PREFIX}' to carry it through to the results",
    )


@dataclass(frozen=True)
class SchemaCheck:
    problems: list[Problem]
    checked_columns: list[str]  # known columns present with a usable type, in COLUMNS order
    meta_columns: list[str]  # meta_* columns in file order


def check_schema(schema: pa.Schema) -> SchemaCheck:
    """Whole-file problems visible in the schema: missing, unknown, repeated, mistyped columns."""
    problems: list[Problem] = []
    counts = Counter(schema.names)
    for name, n in counts.items():
        if n > 1:
            problems.append(
                Problem(None, name, f"column {name!r} appears {n} times; keep exactly one")
            )
    for name in REQUIRED_COLUMNS:
        if name not in counts:
            problems.append(
                Problem(
                    None,
                    name,
                    f"missing required column {name!r}; add it: {_REQUIRED_HINT[name]}",
                )
            )
    checked: list[str] = []
    for spec in COLUMNS:
        if counts.get(spec.name) != 1:
            continue
        t = schema.field(spec.name).type
        if pa.types.is_null(t):
            # Every value is null: fine for an optional column, a problem for a required one.
            if spec.required:
                problems.append(
                    Problem(
                        None,
                        spec.name,
                        f"column {spec.name!r} has no values (every row is null); fill it in: "
                        f"{_REQUIRED_HINT[spec.name]}",
                    )
                )
            continue
        if type_fits(spec.kind, t):
            checked.append(spec.name)
        else:
            problems.append(_type_problem(spec, t))
    meta: list[str] = []
    pandas_index = _pandas_index_columns(schema)
    for name in dict.fromkeys(schema.names):
        if name in COLUMN_SPECS or name in pandas_index:
            continue
        if name.startswith(META_PREFIX) and len(name) > len(META_PREFIX):
            meta.append(name)
        else:
            problems.append(_unknown_column_problem(name))
    return SchemaCheck(problems, checked, meta)


def _pandas_index_columns(schema: pa.Schema) -> set[str]:
    """Index columns pandas' to_parquet() stores (e.g. __index_level_0__): not manifest data."""
    try:
        meta = schema.pandas_metadata or {}
    except ValueError:  # malformed pandas metadata: treat every column as data
        return set()
    return {c for c in meta.get("index_columns", []) if isinstance(c, str)}


def _not_regular_reason(name: str, mode: int) -> str | None:
    """Why ``name`` (of file mode ``mode``) cannot be a manifest, or None for a regular file.
    A named pipe would block the reader forever (and with it SIGTERM handling)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"manifest path {name!r} is a folder; give the path of one Parquet file"
    kind = (
        "a named pipe (FIFO)"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "not a regular file"
    )
    return (
        f"manifest path {name!r} is {kind}, not a regular file; manifests are read more than "
        "once, so write the Parquet file to disk and give its path"
    )


def _check_regular(name: str) -> None:
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        raise ManifestError(f"manifest file not found: {name!r}; check the path", name) from None
    except OSError as err:
        raise ManifestError(
            f"manifest {name!r} cannot be read ({err.strerror}); check the path and its "
            "permissions",
            name,
        ) from None
    reason = _not_regular_reason(name, mode)
    if reason:
        raise ManifestError(reason, name)


def read_manifest_bytes(path: str | os.PathLike) -> bytes:
    """The manifest file's bytes, read once. A run reads only this snapshot (hash, validation,
    rows, results), so the file being replaced, rewritten or moved mid-run cannot change what
    the run sees. Raises ManifestError naming the file when it is not a readable regular file."""
    name = os.fspath(path)
    _check_regular(name)
    try:
        # O_NONBLOCK: had the path become a FIFO since the check, open() must not wait for a
        # writer; fstat then refuses it.
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise ManifestError(
            f"manifest {name!r} cannot be opened ({err.strerror}); check its permissions", name
        ) from None
    with os.fdopen(fd, "rb") as f:
        reason = _not_regular_reason(name, os.fstat(f.fileno()).st_mode)
        if reason:
            raise ManifestError(reason, name)
        try:
            return f.read()
        except OSError as err:
            raise ManifestError(
                f"manifest {name!r} cannot be read ({err.strerror}); copy it to a local disk "
                "and run again",
                name,
            ) from None


def open_manifest(path: str | os.PathLike, data: bytes | None = None) -> pq.ParquetFile:
    """Open a manifest for streaming. Raises ManifestError naming the file when it cannot.

    ``data``: the file's bytes already read (read_manifest_bytes); ``path`` then only names
    the file in messages."""
    name = os.fspath(path)
    if data is None:
        _check_regular(name)
    try:
        return pq.ParquetFile(name if data is None else pa.BufferReader(data))
    except (pa.ArrowException, OSError) as err:
        raise ManifestError(
            f"{name!r} is not a Parquet file ({err}); manifests must be Parquet — convert a "
            "CSV with pandas.read_csv(path).to_parquet('manifest.parquet', index=False)",
            name,
        ) from None


def read_manifest_schema(path: str | os.PathLike) -> pa.Schema:
    """The manifest's Arrow schema, read from the Parquet footer only (no rows are read)."""
    with open_manifest(path) as pf:
        return pf.schema_arrow
