"""Reading a manifest for a run: whole-file problems stop the run, row problems fail rows.

The rule (documented in the CLI help too):

- a problem of the whole file (not Parquet, missing/unknown/mistyped column, no rows) is a
  config error: the run stops before any work, exit code 2, with every problem listed;
- a problem of one row (empty instruction, negative seed, bad size, duplicate row_id,
  unusable image reference) fails that row alone with the reason in the results; the other
  rows run.
- remote images (s3://, gs://, ...) are read only under a remote root the run was given
  (``image_roots`` entries that are URIs, the CLI's --image-root): any other remote reference
  fails its row at once, before pyarrow tries (and, unconfigured, may hang) to reach it.
  Missing and undecodable image files are found later (planning / the actor) and fail their
  row the same way.

The file is read once, into memory (its compressed size, not its rows): the digest, the
validation, the planned rows and the results' carried columns all come from that snapshot,
so a manifest replaced, rewritten or moved while the run goes on changes nothing the run
reports.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from manifests import (
    ManifestError,
    ManifestRow,
    SkippedRow,
    iter_rows_skipping,
    validate_manifest,
)
from manifests.paths import is_remote_uri
from manifests.schema import read_manifest_bytes
from manifests.validate import positional_ids
from pipeline.errors import ConfigError

# How a user allows images outside the manifest's folder, named in row reasons: the CLI's
# flag by default; a job says image_roots.
CLI_ROOTS_SETTING = "--image-root"


@dataclass(frozen=True)
class BadRow:
    """A manifest row that fails validation: it is reported, never run."""

    row_index: int
    row_id: str
    reason: str
    image: str | None = None
    instruction: str | None = None
    seed: int | None = None
    product_id: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class CheckedManifest:
    path: str
    rows_total: int
    row_problems: dict[int, list[tuple[str | None, str]]]  # row -> [(column, reason)]
    digest: str  # sha256 of the file bytes: part of the run id
    image_roots: tuple[str, ...] = ()  # extra folders local images may live in
    remote_roots: tuple[str, ...] = ()  # URI prefixes remote images may live under
    # the file's bytes as first read: every later read of the run reads these
    data: bytes | None = field(default=None, repr=False, compare=False)
    # ids of rows without a usable row_id, chosen not to collide with any given row_id
    positional_ids: dict[int, str] = field(default_factory=dict, repr=False, compare=False)
    roots_setting: str = CLI_ROOTS_SETTING

    def source(self) -> pa.NativeFile | str:
        """What to read the manifest from: the snapshot (a fresh reader each call)."""
        return self.path if self.data is None else pa.BufferReader(self.data)


def _refuse(path: str, problems: Sequence[object]) -> ConfigError:
    lines = "\n".join(f"  - {p}" for p in problems[:50])
    more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
    return ConfigError(f"manifest {path!r} cannot be used:\n{lines}{more}\n"
                       "Fix the file (see the problems above) and run again.")


def check_manifest(path: str, image_roots: Sequence[str] | None = None,
                   roots_setting: str = CLI_ROOTS_SETTING) -> CheckedManifest:
    """Read the manifest once and validate it (streaming over the snapshot). Raises
    ConfigError on whole-file problems.

    ``image_roots``: folders besides the manifest's own that local images may live in, and
    URI prefixes (s3://bucket/prefix) remote images may live under. ``roots_setting``: how
    the user gives them (--image-root, or a job's image_roots), named in row reasons."""
    path = os.fspath(path)
    remote_roots = tuple(r for r in image_roots or () if is_remote_uri(str(r)))
    image_roots = [r for r in image_roots or () if r not in remote_roots]
    try:
        data = read_manifest_bytes(path)
    except ManifestError as err:
        raise _refuse(path, err.problems) from None
    rows_total, problems = validate_manifest(path, data=data, image_roots=image_roots,
                                             max_problems=None, roots_setting=roots_setting)
    file_level = [p for p in problems if p.row is None]
    if file_level:
        raise _refuse(path, file_level)
    row_problems: dict[int, list[tuple[str | None, str]]] = {}
    for p in problems:
        row_problems.setdefault(int(p.row), []).append((p.column, p.reason))
    return CheckedManifest(path=path, rows_total=rows_total, row_problems=row_problems,
                           digest=hashlib.sha256(data).hexdigest(),
                           image_roots=tuple(image_roots), remote_roots=remote_roots,
                           data=data, positional_ids=positional_ids(path, row_problems,
                                                                    data=data),
                           roots_setting=roots_setting)


def remote_image_problem(uri: str, roots: Sequence[str],
                         roots_setting: str = CLI_ROOTS_SETTING) -> str | None:
    """None when the remote ``uri`` lies under one of ``roots``, else why it may not be read."""
    scheme, _, rest = uri.partition("://")
    if any(part in (".", "..") for part in rest.split("/")):
        return (f"remote image {uri!r} has '.' or '..' path segments; write the plain object "
                "path")
    for root in roots:
        r_scheme, _, r_rest = root.partition("://")
        prefix = r_rest.rstrip("/") + "/"
        if r_scheme.lower() == scheme.lower() and rest.startswith(prefix):
            return None
    bucket = rest.split("/", 1)[0]
    allow = (f"pass --image-root {scheme}://{bucket}/" if roots_setting == CLI_ROOTS_SETTING
             else f"add {scheme}://{bucket}/ to {roots_setting}")
    return (f"remote image {uri!r} is not under a remote root this run was given; remote "
            f"images are read only where allowed: {allow} (or a narrower prefix) and configure "
            f"pyarrow's credentials for {scheme}")


def _refuse_unlisted_remote(row: ManifestRow | BadRow, roots: Sequence[str],
                            roots_setting: str) -> ManifestRow | BadRow:
    if not isinstance(row, ManifestRow) or not is_remote_uri(row.image):
        return row
    problem = remote_image_problem(row.image, roots, roots_setting)
    if problem is None:
        return row
    return BadRow(row.row_index, row.row_id, f"image: {problem}", row.image, row.instruction,
                  row.seed, row.product_id, row.variant)


def iter_manifest(checked: CheckedManifest, batch_rows: int = 8192
                  ) -> Iterator[list[ManifestRow | BadRow]]:
    """Rows in manifest order, in batches; rows with problems come as BadRow."""
    for batch in _iter_all(checked, batch_rows):
        yield [_refuse_unlisted_remote(row, checked.remote_roots, checked.roots_setting)
               for row in batch]


def _iter_all(checked: CheckedManifest, batch_rows: int
              ) -> Iterator[list[ManifestRow | BadRow]]:
    rows = iter_rows_skipping(checked.path, checked.row_problems, data=checked.data,
                              image_roots=checked.image_roots or None, batch_rows=batch_rows,
                              roots_setting=checked.roots_setting)
    try:
        for batch in rows:
            yield [_bad_row(r.row_index, checked.row_problems[r.row_index], r.raw,
                            checked.positional_ids.get(r.row_index, f"row-{r.row_index}"))
                   if isinstance(r, SkippedRow) else r for r in batch]
    except ManifestError as err:  # the snapshot validated clean: nothing else should fail
        row = next((p.row for p in err.problems if p.row is not None), None)
        where = f" (row {row})" if row is not None else ""
        raise ConfigError(f"manifest {checked.path!r} changed while the run read it{where}; "
                          "run again") from None


def _bad_row(index: int, problems: list[tuple[str | None, str]], raw: dict,
             positional: str) -> BadRow:
    reason = "; ".join(f"{col}: {why}" if col else why for col, why in problems)
    image, instruction, seed = raw.get("image"), raw.get("instruction"), raw.get("seed")
    given = raw.get("row_id")
    # A duplicate or invalid id must not collide with another row's id. Bad rows without a
    # valid given id get a positional id: a content-derived one could repeat (two identical
    # bad rows, or a bad row repeating a good one) since bad rows skip the duplicate check;
    # the positional one was chosen to differ from every given id (row-N may be taken).
    if given is not None and not any(col in ("row_id", None) for col, _ in problems):
        row_id = str(given)
    else:
        row_id = positional

    def text(v: object) -> str | None:
        return None if v is None else str(v)

    return BadRow(index, row_id, reason, text(image), text(instruction),
                  seed if isinstance(seed, int) else None, text(raw.get("product_id")),
                  text(raw.get("variant")))
