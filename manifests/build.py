"""Build a manifest from a product catalog and a variants file: products × variants × seeds.

Catalog: a folder of images (product_id = file stem), or a CSV / Parquet table with columns
``product_id`` and ``image`` plus any descriptive fields (product, category, colour, …).
Variants: a YAML list of ``{name, instruction, [steps, guidance, output_format, width, height],
[any template fields]}``; the instruction is a template such as "place the {product} on {backdrop}".
Template fields: every catalog column but image (``product`` defaults to the product id with
'_' and '-' as spaces), ``variant`` (the variant's name), and the variant's own fields, which win
over catalog fields of the same name.

Chained edits: instead of one instruction a variant may list ``steps`` (a list: each an
instruction template, or a mapping ``{instruction, [steps, guidance, ...]}`` whose settings win
over the variant's; an integer ``steps`` stays the sampler's step count). Step 1 edits the
product image, step j the output of step j-1 (image ``row:<row_id>``). The final step keeps the
plain row id ``<product>--<variant>--<k>`` and the variant's name (publish takes it); step j
before it is ``<product>--<variant>--<k>--step<j>``, variant ``<variant>-step<j>``.

Seeds and row ids are derived from (product_id, variant, k) alone, so re-building after adding
products or variants leaves every existing row — and therefore its cache key — unchanged.

A bad product does not stop the build (a bad row fails alone): a product whose image file is
missing is still written, image path as given, so the run fails its rows with that reason; a
product with no id or no usable image reference, or a (product, variant) whose instruction uses
a field the product leaves empty, is skipped. Each is a warning line, printed to stderr and kept
on the returned ``BuildResult``. Problems of the files themselves (no such catalog, missing
columns, duplicate ids, a malformed variants file) still raise BuildError.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import logging
import math
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from tqdm import tqdm

from . import rules
from .paths import SUPPORTED_SCHEMES, is_within, uri_scheme
from .problems import BuildError, Problem
from .schema import META_PREFIX
from .template import Template, TemplateError, check_template
from .validate import validate_manifest

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SEED_RANGE = 2**31
_WRITE_CHUNK_ROWS = 8192
MAX_PRINTED_WARNINGS = 20  # stderr lists this many warning lines, then a count of the rest
_SETTINGS = {
    "steps": (rules.check_steps, pa.int64()),
    "guidance": (rules.check_guidance, pa.float64()),
    "output_format": (rules.check_output_format, pa.string()),
    "width": (lambda v: rules.check_side("width", v), pa.int64()),
    "height": (lambda v: rules.check_side("height", v), pa.int64()),
}


@dataclass(frozen=True)
class Product:
    product_id: str
    image: str  # absolute local path, or a URI kept as is
    fields: dict[str, object]  # template fields: every catalog column but image, plus product
    image_missing: bool = False  # a local file that does not exist: the run fails its rows


@dataclass(frozen=True)
class Catalog:
    source: str
    products: list[Product]
    field_types: dict[str, pa.DataType]  # descriptive fields, carried through as meta_* columns
    # products skipped or kept with a missing image, one line each (a bad row fails alone)
    warnings: list[str] = dataclasses.field(default_factory=list)
    skipped_products: int = 0  # rows of the catalog with no id or no usable image reference


class BuildResult(int):
    """The number of rows written (an int, so existing callers keep working), plus the warning
    lines: products whose rows will fail in the run (image not found) or that were skipped."""

    warnings: tuple[str, ...]
    skipped_products: int  # catalog rows with no id or no usable image reference
    skipped_rows: int  # (product, variant, seed) rows of kept products not written
    missing_image_rows: int  # rows written whose image file does not exist now

    def __new__(cls, rows: int, warnings: list[str] | tuple[str, ...] = (),
                skipped_products: int = 0, skipped_rows: int = 0,
                missing_image_rows: int = 0) -> BuildResult:
        result = super().__new__(cls, rows)
        result.warnings = tuple(warnings)
        result.skipped_products = skipped_products
        result.skipped_rows = skipped_rows
        result.missing_image_rows = missing_image_rows
        return result

    def summary(self) -> str:
        """One counted line, e.g. for a nightly log ('' when there is nothing to say)."""
        if not self.warnings:
            return ""
        parts = []
        if self.missing_image_rows:
            parts.append(f"{self.missing_image_rows} row(s) written whose image is missing "
                         "(they will fail in the run)")
        if self.skipped_products:
            parts.append(f"{self.skipped_products} product(s) skipped")
        if self.skipped_rows:
            parts.append(f"{self.skipped_rows} row(s) skipped: an instruction field has no value")
        what = "; ".join(parts) or "see below"
        return f"manifest built ({int(self)} rows) with {len(self.warnings)} warning(s): {what}"

    def report(self, limit: int = MAX_PRINTED_WARNINGS) -> str:
        """The summary line, then up to ``limit`` warning lines and a count of the rest."""
        if not self.warnings:
            return ""
        lines = [self.summary(), *(f"  - {w}" for w in self.warnings[:limit])]
        if len(self.warnings) > limit:
            lines.append(f"  ... and {len(self.warnings) - limit} more warning(s) not listed")
        return "\n".join(lines)


def print_to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Step:
    """One step of a chained variant: its instruction and its own settings."""

    template: Template
    settings: dict[str, object]


@dataclass(frozen=True)
class Variant:
    name: str
    template: Template  # the (final step's) instruction
    settings: dict[str, object]  # steps / guidance / output_format / width / height
    fields: dict[str, object]  # extra template fields (backdrop, …)
    chain: tuple[Step, ...] = ()  # a chained variant's steps, in order (the last is `template`)

    @property
    def steps(self) -> tuple[Step, ...]:
        """Every step (one for a plain variant), settings merged over the variant's."""
        if not self.chain:
            return (Step(self.template, self.settings),)
        return tuple(Step(s.template, {**self.settings, **s.settings}) for s in self.chain)


def _problem(reason: str) -> Problem:
    return Problem(None, None, reason)


def _sanitise(part: str) -> str:
    """A row-id part: letters, digits, '.', '_' and single '-' (so '--' only separates parts).

    Letters and digits are Unicode ones (str.isalnum, after NFC so a decomposed 'é' is one
    letter), so '靴' and '鞄' stay apart; everything else (spaces, '/', controls, marks)
    becomes '_'. ASCII ids map exactly as they always did: row ids must not change."""
    part = unicodedata.normalize("NFC", part.strip())
    part = "".join(c if c.isalnum() or c in "._-" else "\0" for c in part)
    part = re.sub("\0+", "_", part)
    return re.sub(r"-{2,}", "-", part)


def stable_row_id(product_id: str, variant: str, k: int) -> str:
    return f"{_sanitise(product_id)}--{_sanitise(variant)}--{k}"


def variant_seed(product_id: str, variant: str, k: int) -> int:
    """Deterministic seed in [0, 2**31) for the k-th sample of (product, variant)."""
    digest = hashlib.sha256(f"{product_id}\x1f{variant}\x1f{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % SEED_RANGE


def _humanise(product_id: str) -> str:
    return re.sub(r"[_\-]+", " ", product_id).strip()


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


# ----------------------------------------------------------------------------- catalog


def load_catalog(catalog: str | os.PathLike) -> Catalog:
    """Read a catalog folder, CSV or Parquet file. Raises BuildError listing every problem."""
    source = os.path.abspath(os.fspath(catalog))
    if not os.path.exists(source):
        raise BuildError([_problem(f"catalog not found: {source!r}; check the path")])
    if os.path.isdir(source):
        return _catalog_from_folder(source)
    suffix = os.path.splitext(source)[1].lower()
    if suffix == ".csv":
        records, columns = _read_csv(source)
        types = {c: pa.string() for c in columns}
    elif suffix in (".parquet", ".pq"):
        try:
            table = pq.read_table(source)
        except (pa.ArrowException, OSError) as err:
            raise BuildError(
                [_problem(f"catalog {source!r} is not a readable Parquet file ({err})")]
            ) from None
        records, columns = table.to_pylist(), table.column_names
        types = {
            f.name: (pa.string() if pa.types.is_null(f.type) else f.type) for f in table.schema
        }
    else:
        raise BuildError(
            [
                _problem(
                    f"catalog {source!r} is neither a folder of images nor a .csv or .parquet "
                    "file; give one of those"
                )
            ]
        )
    return _catalog_from_records(source, records, columns, types)


def _catalog_from_folder(folder: str) -> Catalog:
    files = sorted(
        name
        for name in os.listdir(folder)
        if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, name))
    )
    if not files:
        raise BuildError(
            [_problem(f"catalog folder {folder!r} has no images ({', '.join(IMAGE_SUFFIXES)})")]
        )
    by_id: dict[str, list[str]] = {}
    for name in files:
        by_id.setdefault(os.path.splitext(name)[0], []).append(name)
    problems = [
        _problem(
            f"catalog folder {folder!r}: duplicate product id {pid!r} from files "
            f"{', '.join(names)}; the file stem is the product id, so rename or remove one"
        )
        for pid, names in by_id.items()
        if len(names) > 1
    ]
    if problems:
        raise BuildError(problems)
    products = [
        Product(pid, os.path.join(folder, names[0]), {"product_id": pid, "product": _humanise(pid)})
        for pid, names in by_id.items()
    ]
    _check_unique_row_id_parts(folder, products)
    return Catalog(folder, products, {"product": pa.string()})


def _read_csv(source: str) -> tuple[list[dict], list[str]]:
    try:
        with open(source, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            records = []
            for i, raw in enumerate(reader):
                if None in raw:
                    raise BuildError(
                        [_problem(f"catalog {source!r} row {i}: more values than header columns")]
                    )
                records.append(
                    {
                        key.strip(): (value.strip() or None) if isinstance(value, str) else None
                        for key, value in raw.items()
                    }
                )
    except (UnicodeDecodeError, csv.Error) as err:
        raise BuildError(
            [_problem(f"catalog {source!r} is not a readable CSV file ({err})")]
        ) from None
    return records, columns


def _catalog_from_records(
    source: str, records: list[dict], columns: list[str], types: dict[str, pa.DataType]
) -> Catalog:
    missing = [c for c in ("product_id", "image") if c not in columns]
    if missing:
        raise BuildError(
            [
                _problem(
                    f"catalog {source!r} lacks column(s) {', '.join(missing)}; a catalog table "
                    f"needs product_id and image (has: {', '.join(columns) or 'no columns'})"
                )
            ]
        )
    if not records:
        raise BuildError([_problem(f"catalog {source!r} has no products; add at least one row")])

    base = os.path.dirname(source)
    problems: list[Problem] = []
    warnings: list[str] = []
    products: list[Product] = []
    first_row: dict[str, int] = {}
    for i, record in enumerate(records):
        where = f"catalog {source!r} row {i}"
        pid, reason = _product_id(record.get("product_id"))
        if reason:
            warnings.append(f"{where}: {reason} (skipped)")
            continue
        if pid in first_row:
            problems.append(
                _problem(
                    f"{where}: duplicate product id {pid!r} (first at row {first_row[pid]}); "
                    "product ids must be unique"
                )
            )
            continue
        first_row[pid] = i
        image, reason = _catalog_image(record.get("image"), base)
        if reason and image is None:
            warnings.append(f"{where} (product {pid!r}): {reason} (skipped)")
            continue
        if reason:  # the file is missing: the run fails these rows alone, with this reason
            warnings.append(f"{where} (product {pid!r}): {reason} (its rows are written and "
                            "will fail in the run)")
        fields = {k: v for k, v in record.items() if k != "image"}
        fields["product_id"] = pid
        if _is_missing(fields.get("product")):
            fields["product"] = _humanise(pid)
        products.append(Product(pid, image, fields, image_missing=reason is not None))
    if problems:
        raise BuildError(problems)
    if not products:  # nothing left to build: every product was unusable
        raise BuildError([_problem(w) for w in warnings])
    _check_unique_row_id_parts(source, products)
    field_types = {c: t for c, t in types.items() if c not in ("product_id", "image")}
    field_types.setdefault("product", pa.string())
    return Catalog(source, products, field_types, warnings,
                   skipped_products=len(records) - len(products))


_EXACT_FLOAT_INTS = 2**53  # integers above this may have lost digits in a float column


def _product_id(value: object) -> tuple[str, None] | tuple[None, str]:
    """The id as text. Integral floats are taken as integers (101.0 -> "101", as the int
    column would have given): pandas turns an integer column with one gap into float64."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer() \
            and abs(value) <= _EXACT_FLOAT_INTS:
        value = int(value)
    if rules.is_int(value):
        value = str(value)
    if value is None or (isinstance(value, float) and math.isnan(value)) or \
            (isinstance(value, str) and not value.strip()):
        return None, "product_id is empty; give every product an id"
    if not isinstance(value, str):
        return None, (f"product_id must be text or an integer (got {value!r}); write the "
                      "product_id column as text")
    return value.strip(), None


def _catalog_image(ref: object, base: str) -> tuple[str | None, str | None]:
    """(image, None) when usable; (None, reason) when the product cannot have rows; (path,
    reason) when the local file is missing (the rows are still written, and fail in the run)."""
    if not isinstance(ref, str) or not ref.strip():
        return None, "image is empty; give a path (relative to the catalog's folder) or a URI"
    scheme = uri_scheme(ref)
    if scheme is not None and scheme != "file":
        if scheme not in SUPPORTED_SCHEMES:
            return None, (
                f"image {ref!r} uses the scheme {scheme!r}, which pyarrow.fs cannot read; "
                f"use a local path or one of {', '.join(sorted(SUPPORTED_SCHEMES))}"
            )
        return ref, None  # remote: the pipeline reports a missing object when it reads it
    path = unquote(urlparse(ref).path) if scheme == "file" else ref
    path = os.path.normpath(os.path.join(base, path))
    if not os.path.isfile(path):
        return path, f"image not found: {path!r} (relative paths resolve against {base!r})"
    return path, None


def _check_unique_row_id_parts(source: str, products: list[Product]) -> None:
    seen: dict[str, str] = {}
    problems = []
    for p in products:
        part = _sanitise(p.product_id)
        if part in seen:
            problems.append(
                _problem(
                    f"catalog {source!r}: product ids {seen[part]!r} and {p.product_id!r} give "
                    f"the same row-id part {part!r}; make them differ in letters or digits"
                )
            )
        seen.setdefault(part, p.product_id)
    if problems:
        raise BuildError(problems)


# ----------------------------------------------------------------------------- variants


def load_variants(path: str | os.PathLike) -> list[Variant]:
    """Read and check a variants YAML file. Raises BuildError listing every problem."""
    variants, problems = _read_variants(path)
    if problems:
        raise BuildError(problems)
    return variants


def _read_variants(path: str | os.PathLike) -> tuple[list[Variant], list[Problem]]:
    """The variants that are fine, and every problem of the file (an unreadable or empty
    file is one problem; otherwise each entry is checked in full, whatever came before)."""
    source = os.path.abspath(os.fspath(path))
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return [], [_problem(f"variants file not found: {source!r}")]
    except (OSError, UnicodeDecodeError) as err:
        return [], [_problem(f"cannot read variants file {source!r}: {err}")]
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err)
        return [], [
            _problem(f"variants file {source!r} is not valid YAML{where}: {what}; fix the syntax there")
        ]

    entries, entry_nodes = data, node
    problems: list[Problem] = []
    if isinstance(data, dict):  # unknown keys are named, and the variants still checked
        problems += [
            _problem(
                f"variants file {source!r} line {k.start_mark.line + 1}: unknown top-level key "
                f"{k.value!r}{_did_you_mean(str(k.value), ['variants'])}; the file holds only a "
                "'variants' list, and each variant carries its own settings"
            )
            for k, _ in node.value
            if k.value != "variants"
        ]
    if isinstance(data, dict) and "variants" in data:
        entries = data["variants"]
        entry_nodes = next(v for k, v in node.value if k.value == "variants")
    if not isinstance(entries, list) or not entries:
        problems.append(
            _problem(
                f"variants file {source!r} has no variants; it must be a non-empty list of "
                "{name, instruction} entries (or a mapping with such a 'variants' list)"
            )
        )
        return [], problems
    lines = [n.start_mark.line + 1 for n in entry_nodes.value]

    variants: list[Variant] = []
    names: list[str] = []  # every named entry, valid or not, for the duplicate check
    for i, entry in enumerate(entries):
        name, variant, entry_problems = _parse_variant(
            entry, f"variants file {source!r} line {lines[i]}"
        )
        problems += entry_problems
        names += [name] if name is not None else []
        if variant is not None:
            variants.append(variant)
    problems += _duplicate_name_problems(source, names)
    return variants, problems


def _duplicate_name_problems(source: str, names: list[str]) -> list[Problem]:
    by_part: dict[str, str] = {}
    problems = []
    for name in names:
        part = _sanitise(name)
        if part in by_part:
            same = (
                "is defined twice"
                if by_part[part] == name
                else f"and {by_part[part]!r} give the same row-id part {part!r}"
            )
            problems.append(
                _problem(
                    f"variants file {source!r}: variant {name!r} {same}; variant names must be unique"
                )
            )
        by_part.setdefault(part, name)
    return problems


def _did_you_mean(word: str, known: list[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse_variant(
    entry: object, where: str
) -> tuple[str | None, Variant | None, list[Problem]]:
    """(name or None, the variant or None, every problem of the entry)."""
    if not isinstance(entry, dict):
        return None, None, [
            _problem(
                f"{where}: each variant must be a mapping with name and instruction (got {entry!r})"
            )
        ]
    problems: list[Problem] = []
    name = entry.get("name")
    if rules.is_int(name):
        name = str(name)
    if not isinstance(name, str) or not name.strip():
        # Named, the rest of a nameless entry is still checked so one edit fixes it all.
        problems.append(
            _problem(f"{where}: variant has no name; add name: <short id>, e.g. name: red")
        )
        name = None
    else:
        name = name.strip()
        where = f"{where}, variant {name!r}"
    template = None
    instruction = entry.get("instruction")
    chain: tuple[Step, ...] = ()
    if isinstance(entry.get("steps"), list):
        chain, step_problems = _parse_steps(entry["steps"], where)
        problems += step_problems
        if instruction is not None:
            problems.append(_problem(f"{where}: give either instruction or a steps list, not "
                                     "both (the steps' instructions are the edits)"))
        template = chain[-1].template if chain and not step_problems else None
    elif not isinstance(instruction, str) or not instruction.strip():
        problems.append(
            _problem(
                f"{where}: no instruction; add e.g. instruction: 'place the {{product}} on a red background'"
            )
        )
    else:
        template, reasons = check_template(instruction.strip())
        problems += [_problem(f"{where}: instruction template: {r}") for r in reasons]
    settings: dict[str, object] = {}
    fields: dict[str, object] = {}
    for key, value in entry.items():
        if key in ("name", "instruction") or (key == "steps" and isinstance(value, list)):
            continue
        if key in _SETTINGS:
            if value is None:
                continue
            checked, reason = _SETTINGS[key][0](value)
            if reason:
                problems.append(_problem(f"{where}: {reason}"))
            else:
                settings[key] = checked
        elif not isinstance(key, str) or not key.isidentifier():
            problems.append(
                _problem(f"{where}: field name {key!r} must be a plain name (letters, digits, _)")
            )
        elif (template is None or key not in template.fields) and (
            hint := _did_you_mean(key, [*_SETTINGS, "name", "instruction"])
        ):
            # An unused field spelled like a setting is a typo that would silently do nothing.
            problems.append(
                _problem(
                    f"{where}: unknown setting {key!r}{hint}; settings are "
                    f"{', '.join(_SETTINGS)}, and other keys are fields the instruction uses"
                )
            )
        elif _is_missing(value):
            problems.append(
                _problem(f"{where}: field {key!r} is empty; give it a value or remove it")
            )
        elif not isinstance(value, str | int | float | bool):
            problems.append(
                _problem(
                    f"{where}: field {key!r} must be a single value (text or number), not {type(value).__name__}"
                )
            )
        else:
            fields[key] = value
    if problems:
        return name, None, problems
    return name, Variant(name, template, settings, fields, chain), []


def _parse_steps(entries: list, where: str) -> tuple[tuple[Step, ...], list[Problem]]:
    """A chained variant's steps: each an instruction template or {instruction, settings}."""
    if not entries:
        return (), [_problem(f"{where}: steps is an empty list; list the edits in order, or "
                             "give steps: <number> for the sampler's step count")]
    steps, problems = [], []
    for j, entry in enumerate(entries, start=1):
        at = f"{where}, step {j}"
        instruction, settings = (entry, {}) if isinstance(entry, str) else (
            (entry.get("instruction"), entry) if isinstance(entry, dict) else (None, {}))
        if not isinstance(instruction, str) or not instruction.strip():
            problems.append(_problem(f"{at}: no instruction; write the edit as text, or "
                                     "{instruction: ..., guidance: ...}"))
            continue
        template, reasons = check_template(instruction.strip())
        problems += [_problem(f"{at}: instruction template: {r}") for r in reasons]
        checked: dict[str, object] = {}
        for key, value in settings.items():
            if key == "instruction" or value is None:
                continue
            if key not in _SETTINGS:
                problems.append(_problem(f"{at}: unknown setting {key!r}; a step takes "
                                         f"instruction and {', '.join(_SETTINGS)}"))
                continue
            checked[key], reason = _SETTINGS[key][0](value)
            if reason:
                problems.append(_problem(f"{at}: {reason}"))
        if template is not None:
            steps.append(Step(template, checked))
    return tuple(steps), problems


# ----------------------------------------------------------------------------- build


def _template_field_problems(catalog: Catalog, variants: list[Variant]) -> list[Problem]:
    catalog_fields = set().union(*(p.fields for p in catalog.products))
    problems = []
    for v in variants:
        available = catalog_fields | {"variant"} | set(v.fields)
        used = dict.fromkeys(f for step in v.steps for f in step.template.fields)
        for field in used:
            if field not in available:
                problems.append(
                    _problem(
                        f"variant {v.name!r}: instruction uses field {{{field}}}, which neither "
                        f"the catalog nor the variant provides; available fields: "
                        f"{', '.join(sorted(available))}"
                    )
                )
    return problems


def _row_id_collision_problems(catalog: Catalog, variants: list[Variant]) -> list[Problem]:
    """Refuse (product, variant) pairs that would share a row id.

    Parts never hold '--', so 'P--V--k' is ambiguous only where one product part is another's
    plus a trailing '-' and one variant part is another's plus a leading '-': 'a-' + 'b' and
    'a' + '-b' both give 'a---b--0'. Trimming the '-' would change the row ids of ids that
    built fine until now (and merge 'a' with 'a-'), so such pairs are named instead."""
    products = {_sanitise(p.product_id): p.product_id for p in catalog.products}
    names = {_sanitise(v.name): v.name for v in variants}
    product_pairs = [(products[part + "-"], pid) for part, pid in products.items()
                     if part + "-" in products]
    variant_pairs = [(name, names["-" + part]) for part, name in names.items()
                     if "-" + part in names]
    problems = [
        _problem(
            f"product {p_dash!r} with variant {v!r} and product {p!r} with variant {dash_v!r} "
            f"would share the row id {stable_row_id(p_dash, v, 0)!r}; rename one of them (e.g. "
            f"drop the trailing '-' of {p_dash!r} or the leading '-' of {dash_v!r})"
        )
        for p_dash, p in product_pairs
        for v, dash_v in variant_pairs
    ]
    return problems


def _meta_names(catalog: Catalog) -> dict[str, str]:
    """Catalog field -> meta column name (a field already called meta_x keeps its name)."""
    names: dict[str, str] = {}
    for field in catalog.field_types:
        column = field if field.startswith(META_PREFIX) else META_PREFIX + field
        if column in names.values():
            raise BuildError(
                [
                    _problem(
                        f"catalog {catalog.source!r}: fields map to the same column {column!r}; rename one"
                    )
                ]
            )
        names[field] = column
    return names


def _image_for_manifest(image: str, out_dir: str) -> str:
    """Relative to the manifest's folder when under it, so the folder can move as a whole."""
    if uri_scheme(image) is None and is_within(image, out_dir):
        return os.path.relpath(image, out_dir)
    return image


def build_manifest(
    catalog: str | os.PathLike,
    variants: str | os.PathLike,
    seeds_per_variant: int = 1,
    out: str | os.PathLike | None = None,
    warn: Callable[[str], None] | None = print_to_stderr,
) -> BuildResult:
    """Write the manifest for catalog × variants × seeds to ``out`` (Parquet); return its rows
    as a BuildResult (an int carrying ``.warnings``).

    Rows come product by product, then variant by variant (file order), then k = 0.. seeds-1.
    A bad product does not stop the build: see the module docstring; ``warn`` receives the
    counted warning report (default: stderr; None: say nothing, read ``.warnings``). Raises
    BuildError listing every problem of the inputs as files (duplicate product ids, unknown
    template fields, malformed YAML, …) or when no row at all can be written; ``out`` is only
    ever replaced by a complete manifest that passes validate_manifest.
    """
    if out is None:
        raise TypeError("build_manifest() needs out=<path of the manifest to write>")
    if not rules.is_int(seeds_per_variant) or seeds_per_variant < 1:
        raise BuildError(
            [_problem(f"seeds_per_variant must be a positive integer (got {seeds_per_variant!r})")]
        )
    out_path = os.path.abspath(os.fspath(out))
    cat, variant_list = check_build_inputs(catalog, variants)
    meta_names = _meta_names(cat)
    settings = [s for s in _SETTINGS
                if any(s in step.settings for v in variant_list for step in v.steps)]
    schema = pa.schema(
        [
            ("row_id", pa.string()),
            ("image", pa.string()),
            ("instruction", pa.string()),
            ("seed", pa.int64()),
            ("product_id", pa.string()),
            ("variant", pa.string()),
            *[(s, _SETTINGS[s][1]) for s in settings],
            *[(meta_names[f], t) for f, t in cat.field_types.items()],
        ]
    )
    out_dir = os.path.dirname(out_path)
    # Images outside the manifest's folder (after resolving symlinks, as validation does) need
    # their folders passed as image_roots when the manifest is validated, so say which ones.
    real_out_dir = os.path.realpath(out_dir)
    outside = sorted(
        {
            os.path.dirname(real)
            for real in (
                os.path.realpath(p.image) for p in cat.products if uri_scheme(p.image) is None
            )
            if not is_within(real, real_out_dir)
        }
    )
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".parquet.tmp", dir=out_dir)
    os.close(fd)
    try:
        skipped: list[str] = []
        missing_image_rows, skipped_rows = [0], [0]
        rows = _write_rows(
            _generate_rows(
                cat, variant_list, seeds_per_variant, out_dir, meta_names, settings, skipped,
                missing_image_rows, skipped_rows,
            ),
            schema,
            tmp,
            total=len(cat.products) * sum(len(v.steps) for v in variant_list) * seeds_per_variant,
        )
        if rows == 0:  # every (product, variant) was skipped: there is nothing to run
            raise BuildError([_problem(w) for w in [*cat.warnings, *skipped]], out_path)
        _, invalid = validate_manifest(tmp, image_roots=outside)
        if invalid:  # a builder bug rather than a user error, but never write a bad manifest
            raise BuildError(invalid, out_path)
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    if outside:
        log.warning(
            "manifest %s refers to images outside its folder; validate and run it with "
            "image_roots=%s",
            out_path,
            outside,
        )
    result = BuildResult(
        rows,
        [*cat.warnings, *skipped],
        skipped_products=cat.skipped_products,
        skipped_rows=skipped_rows[0],
        missing_image_rows=missing_image_rows[0],
    )
    if result.warnings and warn is not None:
        warn(result.report())
    return result


def check_build_inputs(
    catalog: str | os.PathLike, variants: str | os.PathLike
) -> tuple[Catalog, list[Variant]]:
    """Load the catalog and variants and check them together (template fields, row-id
    collisions), writing nothing: what ``build_manifest`` refuses as files, as one BuildError
    (``job validate`` uses it so a spec that validates also builds).

    Every problem comes at once: the catalog's, each variant's, then the unknown template
    fields and row-id collisions of the variants that are otherwise fine."""
    problems: list[Problem] = []
    cat = None
    try:
        cat = load_catalog(catalog)
    except BuildError as err:
        problems += err.problems
    variant_list, variant_problems = _read_variants(variants)
    problems += variant_problems
    if cat is not None:
        problems += _template_field_problems(cat, variant_list)
        problems += _row_id_collision_problems(cat, variant_list)
    if problems:
        raise BuildError(problems)
    return cat, variant_list


def _generate_rows(
    cat: Catalog,
    variants: list[Variant],
    seeds: int,
    out_dir: str,
    meta_names: dict[str, str],
    settings: list[str],
    skipped: list[str],
    missing_image_rows: list[int],
    skipped_rows: list[int],
) -> Iterator[dict[str, object]]:
    """The rows; a (product, variant) whose instruction cannot be filled is skipped, with a
    line in ``skipped``; ``missing_image_rows[0]`` counts rows whose image file is missing,
    ``skipped_rows[0]`` the rows skipped."""
    variant_parts = {v.name: _sanitise(v.name) for v in variants}
    for product in cat.products:
        product_part = _sanitise(product.product_id)  # stable_row_id, computed once per product
        image = _image_for_manifest(product.image, out_dir)
        meta = {meta_names[f]: product.fields.get(f) for f in meta_names}
        for v in variants:
            values = {**product.fields, "variant": v.name, **v.fields}
            instructions = _fill_steps(v, values, product.product_id, skipped)
            if instructions is None:
                skipped_rows[0] += seeds * len(v.steps)
                continue
            if product.image_missing:
                missing_image_rows[0] += seeds * len(instructions)
            last = len(instructions)
            for k in range(seeds):
                final_id = f"{product_part}--{variant_parts[v.name]}--{k}"
                parent = image
                for j, (instruction, step) in enumerate(zip(instructions, v.steps, strict=True),
                                                        start=1):
                    final = j == last
                    row_id = final_id if final else f"{final_id}--step{j}"
                    variant = v.name if final else f"{v.name}-step{j}"
                    yield {
                        "row_id": row_id,
                        "image": parent,
                        "instruction": instruction,
                        "seed": variant_seed(product.product_id, variant, k),
                        "product_id": product.product_id,
                        "variant": variant,
                        **{s: step.settings.get(s) for s in settings},
                        **meta,
                    }
                    parent = rules.CHAIN_PREFIX + row_id


def _fill_steps(v: Variant, values: dict[str, object], product_id: str,
                skipped: list[str]) -> list[str] | None:
    """Each step's instruction for one product, or None (with a line in ``skipped``)."""
    used = list(dict.fromkeys(f for step in v.steps for f in step.template.fields))
    missing = [f for f in used if _is_missing(values.get(f))]
    if missing:
        skipped.append(
            f"product {product_id!r} has no value for "
            f"{', '.join('{' + f + '}' for f in missing)}, used by variant "
            f"{v.name!r}; fill it in the catalog or drop it from the instruction "
            "(skipped)"
        )
        return None
    try:
        return [step.template.fill(values).strip() for step in v.steps]
    except TemplateError as err:
        skipped.append(f"variant {v.name!r}, product {product_id!r}: {err} (skipped)")
        return None


def _write_rows(rows: Iterator[dict[str, object]], schema: pa.Schema, path: str, total: int) -> int:
    """Stream rows into a Parquet file in chunks; memory stays at one chunk."""
    written = 0
    chunk: list[dict[str, object]] = []
    with (
        pq.ParquetWriter(path, schema) as writer,
        tqdm(total=total, unit="row", desc="building manifest", disable=None) as bar,
    ):
        for row in rows:
            chunk.append(row)
            if len(chunk) == _WRITE_CHUNK_ROWS:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                written += len(chunk)
                bar.update(len(chunk))
                chunk = []
        if chunk:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            written += len(chunk)
            bar.update(len(chunk))
    return written
