"""Bad input, kind by kind: every one ends with a reason (or is handled correctly), none
crashes, no row is lost.

Row kinds (bad images, paths, instructions, seeds, ids, settings) are the rows of ONE manifest
run once through the CLI with the tiny-random model; each row must end ``failed`` with the
expected reason, or ``done`` with the expected notes. File kinds (not Parquet, empty, missing /
unknown / mistyped columns, bad flags) each go through the CLI alone and must exit 2 with a
message naming the problem; small all-bad manifests must exit 1 with every row failed.

The summary line, printed (``pytest -s``) and written to ``hardening-summary.txt`` in the
test's temp dir, must read exactly
``N bad inputs tried, N handled with a reason, 0 crashes, 0 rows lost`` with N >= 40.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import hardening_images as img
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pipeline_helpers import TEST_MODEL, start_ray

from pipeline import cli
from pipeline.dispatch import TRUNCATED_NOTE

GOOD_INSTRUCTION = "make it blue"  # under tiny-random's 16 T5 tokens
LONG_INSTRUCTION = " ".join(f"word{i}" for i in range(60))  # far past tiny-random's 16 tokens
HUGE_INSTRUCTION = "make the background a soft gradient " * 3000  # ~100 kB
REMOTE_ROOT = "s3://allowed-bucket/photos/"  # allowed, never reached (no row reads from it)
INJECTION = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes" \'single\''

SCHEMA = pa.schema([
    ("image", pa.string()), ("instruction", pa.string()), ("seed", pa.int64()),
    ("row_id", pa.string()), ("product_id", pa.string()), ("variant", pa.string()),
    ("width", pa.int64()), ("height", pa.int64()), ("steps", pa.int64()),
    ("guidance", pa.float64()), ("output_format", pa.string()), ("meta_kind", pa.string()),
])
_MISSING = object()


@dataclass
class RowKind:
    """One bad (or odd) row: its values, files it needs, and what must become of it."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)  # manifest-relative path -> bytes
    fails_with: tuple[str, ...] = ()  # substrings of the reason; empty: the row must be done
    notes: tuple[str, ...] = ()  # substrings of the notes column (done rows)
    truncated: bool | None = None  # expected truncated column (done rows), None: not checked
    # a later companion row is given the id this row would get by position ("row-N"): the
    # row's own id must still be unique in the results
    id_taken_later: bool = False


def _row_kinds(outside: Path, extra_root: Path) -> list[RowKind]:
    exif6, _ = img.exif_rotated_jpeg(6)
    exif_png, _ = img.exif_rotated_png(6)
    png, jpeg = img.png(), img.jpeg()
    k = RowKind
    return [
        # -- broken files and non-images -------------------------------------------------
        k("truncated PNG", {"image": "images/trunc.png"}, {"images/trunc.png": img.truncated(png)},
          ("cannot be decoded", "truncated")),
        k("truncated JPEG", {"image": "images/trunc.jpg"},
          {"images/trunc.jpg": img.truncated(jpeg, 0.3)}, ("cannot be decoded",)),
        k("PNG corrupt in the middle", {"image": "images/corrupt.png"},
          {"images/corrupt.png": img.corrupt_middle(png)}, ("cannot be decoded",)),
        k("random bytes named .png", {"image": "images/random.png"},
          {"images/random.png": bytes(range(256)) * 8}, ("cannot be decoded",)),
        k("text file named .jpg", {"image": "images/notes.jpg"},
          {"images/notes.jpg": b"this is a shopping list, not a photo\n"}, ("cannot be decoded",)),
        k("HTML page named .png", {"image": "images/page.png"},
          {"images/page.png": b"<!doctype html><html><body>404</body></html>"},
          ("cannot be decoded",)),
        k("empty (0-byte) .png", {"image": "images/empty.png"}, {"images/empty.png": b""},
          ("empty (0 bytes)",)),
        k("folder named like an image", {"image": "images/folder.png"},
          {"images/folder.png/inner.txt": b"x"}, ("not a regular file",)),
        k("image file missing", {"image": "images/nowhere.png"}, {}, ("not found", "nowhere.png")),
        k("decompression bomb above --max-pixels", {"image": "images/bomb49.png"},
          {"images/bomb49.png": img.bomb_png(7000, 7000)}, ("7000x7000", "above the limit")),
        k("bomb past Pillow's own limit", {"image": "images/bomb400.png"},
          {"images/bomb400.png": img.bomb_png(20000, 20000)}, ("too large to decode safely",)),
        # -- odd but valid images: done, with notes ---------------------------------------
        k("animated GIF", {"image": "images/anim.gif"}, {"images/anim.gif": img.animated_gif()},
          notes=("animated image: used the first frame",)),
        k("CMYK JPEG", {"image": "images/cmyk.jpg"}, {"images/cmyk.jpg": img.cmyk_jpeg()}),
        k("16-bit grayscale PNG", {"image": "images/gray16.png"},
          {"images/gray16.png": img.gray16_png()[0]}, notes=("grayscale scaled to 8 bits",)),
        k("16-bit RGB PNG", {"image": "images/rgb16.png"}, {"images/rgb16.png": img.rgb16_png()}),
        k("palette PNG with transparency", {"image": "images/palette.png"},
          {"images/palette.png": img.palette_png_with_transparency()},
          notes=("transparency flattened onto white",)),
        k("RGBA PNG", {"image": "images/rgba.png"}, {"images/rgba.png": img.rgba_png()[0]},
          notes=("transparency flattened onto white",)),
        k("grayscale + alpha PNG", {"image": "images/la.png"}, {"images/la.png": img.la_png()}),
        k("grayscale PNG", {"image": "images/gray.png"}, {"images/gray.png": img.gray_png()}),
        k("1-bit PNG", {"image": "images/bilevel.png"}, {"images/bilevel.png": img.bilevel_png()}),
        k("EXIF-rotated JPEG", {"image": "images/exif6.jpg"}, {"images/exif6.jpg": exif6},
          notes=("EXIF orientation 6 applied",)),
        k("EXIF-rotated PNG", {"image": "images/exif6.png"}, {"images/exif6.png": exif_png},
          notes=("EXIF orientation 6 applied",)),
        k("1x1 image", {"image": "images/one.png"}, {"images/one.png": img.one_by_one_png()}),
        k("large image under the limit (4 MP)", {"image": "images/large.png"},
          {"images/large.png": img.large_png()}),
        k("JPEG named .png", {"image": "images/actually-jpeg.png"},
          {"images/actually-jpeg.png": jpeg}),
        # -- paths -----------------------------------------------------------------------
        k("'..' escaping the manifest's folder", {"image": "../outside/secret.png"}, {},
          ("outside", "allow its folder explicitly with --image-root")),
        k("absolute path outside", {"image": str(outside / "secret.png")}, {}, ("outside",)),
        k("symlink pointing outside", {"image": "images/link.png"}, {}, ("symlink",)),
        k("file:// URI outside", {"image": (outside / "secret.png").as_uri()}, {}, ("outside",)),
        k("file:// URI naming a host", {"image": "file://fileserver/share/x.png"}, {},
          ("names the host",)),
        k("http URL", {"image": "https://example.com/x.png"}, {}, ("http(s) URL",)),
        k("unknown URI scheme", {"image": "ftp://example.com/x.png"}, {}, ("URI scheme 'ftp'",)),
        k("s3 URI outside any configured remote root", {"image": "s3://other-bucket/x.png"}, {},
          ("not under a remote root", "--image-root s3://other-bucket/")),
        k("gs URI with no remote root for gs", {"image": "gs://photos/x.png"}, {},
          ("not under a remote root",)),
        k("'..' inside an allowed remote root", {"image": f"{REMOTE_ROOT}../private/x.png"}, {},
          ("'..' path segments",)),
        k("empty image reference", {"image": ""}, {}, ("image is empty",)),
        k("whitespace image reference", {"image": "   "}, {}, ("image is empty",)),
        k("null image", {"image": None}, {}, ("image is missing",)),
        k("image under an --image-root", {"image": str(extra_root / "allowed.png")}, {}),
        # -- instructions ----------------------------------------------------------------
        k("null instruction", {"instruction": None}, {}, ("instruction is missing",)),
        k("empty instruction", {"instruction": ""}, {}, ("instruction is empty",)),
        k("whitespace-only instruction", {"instruction": " \t\n  "}, {},
          ("instruction is empty",)),
        k("instruction over the T5 limit", {"instruction": LONG_INSTRUCTION}, {},
          notes=(TRUNCATED_NOTE,), truncated=True),
        k("100 kB instruction", {"instruction": HUGE_INSTRUCTION}, {}, notes=(TRUNCATED_NOTE,),
          truncated=True),
        k("HTML/script in the instruction", {"instruction": INJECTION}, {}, truncated=True),
        k("control characters in the instruction",
          {"instruction": "make\x00 it\x07 blue\x1b[31m"}, {}),
        k("emoji, RTL and combining marks", {"instruction": "🎨 خلفية بيضاء e\u0301 ✓"}, {}),
        # -- seeds -----------------------------------------------------------------------
        k("null seed", {"seed": None}, {}, ("seed is missing",)),
        k("negative seed", {"seed": -7}, {}, ("seed must be ≥ 0",)),
        k("seed 2**63-1", {"seed": 2**63 - 1}, {}),
        k("seed 0", {"seed": 0}, {}),
        # -- ids and labels --------------------------------------------------------------
        k("duplicate row_id", {"row_id": "dup-id"}, {}, ("'dup-id' is already used by row",)),
        k("empty row_id", {"row_id": ""}, {}, ("row_id is empty",)),
        k("path traversal and HTML in ids", {"row_id": "../../etc/<b>passwd</b>",
                                             "product_id": "<img src=x onerror=alert(2)>",
                                             "variant": "../../../tmp/evil"}, {}),
        k("repeated row (same image, instruction, seed)", {"row_id": None}, {}, ("repeats row",)),
        k("empty product_id", {"product_id": " "}, {}, ("product_id is empty",)),
        k("bad row without an id, its row-N given to a later row", {"row_id": None, "steps": 0},
          {}, ("steps must be between",), id_taken_later=True),
        # -- per-row settings ------------------------------------------------------------
        k("width without height", {"width": 64}, {}, ("both width and height",)),
        k("width not a multiple of 16", {"width": 100, "height": 64}, {}, ("multiple of 16",)),
        k("zero steps", {"steps": 0}, {}, ("steps must be between",)),
        k("absurd steps", {"steps": 100000}, {}, ("steps must be between",)),
        k("NaN guidance", {"guidance": float("nan")}, {}, ("guidance must be a finite",)),
        k("negative guidance", {"guidance": -1.0}, {}, ("guidance must be between",)),
        k("unknown output_format", {"output_format": "gif"}, {}, ("output_format must be",)),
    ]


# Rows the kinds above lean on: the first holder of "dup-id", the original of the repeated
# row. They are ordinary good rows, not counted as kinds.
def _companions() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("companion: first dup-id", {"row_id": "dup-id", "seed": 900}),
        ("companion: original of the repeated row",
         {"row_id": None, "seed": 901, "instruction": "make it look like a catalogue shot"}),
    ]


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = {name: [r.get(name) for r in rows] for name in SCHEMA.names}
    pq.write_table(pa.table(columns, schema=SCHEMA), path)


@dataclass
class RowRun:
    kinds: list[RowKind]
    kind_rows: dict[str, int]  # kind name -> row index
    rows_total: int
    exit_code: int | str  # "crash: ..." when the run raised
    stderr: str
    results: list[dict[str, Any]]
    folder: Path
    out: Path


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    start_ray(num_cpus=2)
    yield
    ray.shutdown()


def _cli(argv: list[str]) -> tuple[int | str, str]:
    """Run the CLI in this process: (exit code, or 'crash: ...' for an exception; stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code: int | str = cli.main(argv)
        except SystemExit as exc:  # argparse usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        except Exception as exc:  # anything else is a crash
            code = f"crash: {type(exc).__name__}: {exc}"
    return code, err.getvalue()


def _run_args(manifest: Path, out: Path, *more: str) -> list[str]:
    return ["run", str(manifest), "--out", str(out), "--model", TEST_MODEL, "--device", "cpu",
            "--actors", "1", "--batch-size", "4", "--quiet", *more]


@pytest.fixture(scope="module")
def row_run(tmp_path_factory, ray_cluster) -> RowRun:
    base = tmp_path_factory.mktemp("bad-rows")
    folder, outside, extra_root = base / "manifest", base / "outside", base / "extra"
    for d in (folder / "images", outside, extra_root):
        d.mkdir(parents=True)
    (outside / "secret.png").write_bytes(img.png())
    (extra_root / "allowed.png").write_bytes(img.jpeg())
    (folder / "images" / "ok.png").write_bytes(img.png())
    os.symlink(outside / "secret.png", folder / "images" / "link.png")

    kinds = _row_kinds(outside, extra_root)
    rows, kind_rows = [], {}
    entries = [(k.name, k.values, k) for k in kinds]
    entries[1:1] = [(name, values, None) for name, values in _companions()]
    entries += [("companion: holds a bad row's positional id", {}, None)]
    taken_by_companion = None  # the positional id of the bad row marked id_taken_later
    for i, (name, values, kind) in enumerate(entries):
        row = {"image": "images/ok.png", "instruction": GOOD_INSTRUCTION, "seed": 100 + i,
               "row_id": f"row-{i}", "meta_kind": name}
        if name.startswith("repeated row"):  # same image, instruction and seed as its original
            row.update({"instruction": "make it look like a catalogue shot", "seed": 901})
        row.update(values)
        rows.append(row)
        if name.startswith("companion: holds"):
            row["row_id"] = taken_by_companion
        if kind is not None:
            kind_rows[name] = i
            if kind.id_taken_later:
                taken_by_companion = f"row-{i}"
            for rel, data in kind.files.items():
                target = folder / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
    manifest = folder / "manifest.parquet"
    _write_rows(manifest, rows)
    out = base / "out"
    code, stderr = _cli(_run_args(manifest, out, "--image-root", str(extra_root),
                                  "--image-root", REMOTE_ROOT))
    results_files = list((out / "runs").glob("*/results.parquet"))
    results = pq.read_table(results_files[0]).to_pylist() if len(results_files) == 1 else []
    return RowRun(kinds, kind_rows, len(rows), code, stderr, results, folder, out)


# -- file kinds ------------------------------------------------------------------------------
@dataclass
class FileKind:
    name: str
    make: Callable[[Path], list[str]]  # builds its inputs in a folder, returns extra CLI args
    exit_code: int
    message: tuple[str, ...]  # substrings of stderr (exit 2) or of every failed reason (exit 1)
    manifest_name: str = "manifest.parquet"


def _table(**columns: pa.Array) -> pa.Table:
    return pa.table(columns)


def _good_columns(n: int = 2) -> dict[str, pa.Array]:
    return {"image": pa.array(["images/a.png"] * n), "instruction": pa.array(["x"] * n),
            "seed": pa.array(list(range(n)), pa.int64())}


def _writer(table_fn: Callable[[], pa.Table]) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        pq.write_table(table_fn(), folder / "manifest.parquet")
        return []
    return make


def _raw(data: bytes, name: str = "manifest.parquet") -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        (folder / name).write_bytes(data)
        return []
    return make


def _without(name: str) -> Callable[[], pa.Table]:
    return lambda: _table(**{k: v for k, v in _good_columns().items() if k != name})


def _with(**override: pa.Array) -> Callable[[], pa.Table]:
    return lambda: _table(**{**_good_columns(), **override})


def _truncated_parquet(folder: Path) -> list[str]:
    buf = io.BytesIO()
    pq.write_table(_table(**_good_columns(50)), buf)
    (folder / "manifest.parquet").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    return []


def _duplicate_columns(folder: Path) -> list[str]:
    cols = _good_columns()
    table = pa.Table.from_arrays([cols["image"], cols["instruction"], cols["seed"],
                                  cols["seed"]], names=["image", "instruction", "seed", "seed"])
    pq.write_table(table, folder / "manifest.parquet")
    return []


def _folder_manifest(folder: Path) -> list[str]:
    (folder / "manifest.parquet").mkdir()
    return []


def _fifo_manifest(folder: Path) -> list[str]:
    os.mkfifo(folder / "manifest.parquet")  # reading it would wait for a writer forever
    return []


def _damaged_page(folder: Path) -> list[str]:
    from manifest_damage import damaged_parquet

    damaged_parquet(folder / "manifest.parquet")
    return []


def _out_below_a_file(folder: Path) -> list[str]:
    pq.write_table(_table(**_good_columns()), folder / "manifest.parquet")
    (folder / "a-file").write_text("not a folder")
    return ["--out", str(folder / "a-file" / "out")]  # the last --out wins


def _flag(args: list[str]) -> Callable[[Path], list[str]]:
    def make(folder: Path) -> list[str]:
        pq.write_table(_table(**_good_columns()), folder / "manifest.parquet")
        return args
    return make


def _file_kinds() -> list[FileKind]:
    f = FileKind
    empty = pa.table({"image": pa.array([], pa.string()), "instruction": pa.array([], pa.string()),
                      "seed": pa.array([], pa.int64())})
    big_seeds = pa.array([2**63, 2**64 - 1], pa.uint64())
    return [
        f("empty manifest (no rows)", _writer(lambda: empty), 2, ("has no rows",)),
        f("CSV renamed .parquet", _raw(b"image,instruction,seed\na.png,x,1\n"), 2,
          ("not a Parquet file", "read_csv")),
        f("zero-byte manifest", _raw(b""), 2, ("not a Parquet file",)),
        f("truncated Parquet file", _truncated_parquet, 2, ("not a Parquet file",)),
        f("JSON renamed .parquet", _raw(b'[{"image": "a.png"}]'), 2, ("not a Parquet file",)),
        f("manifest path is a folder", _folder_manifest, 2, ("is a folder",)),
        f("manifest missing", lambda folder: [], 2, ("not found",), "absent.parquet"),
        f("missing image column", _writer(_without("image")), 2, ("missing required column 'image'",)),
        f("missing instruction column", _writer(_without("instruction")), 2,
          ("missing required column 'instruction'",)),
        f("missing seed column", _writer(_without("seed")), 2, ("missing required column 'seed'",)),
        f("extra unknown column", _writer(_with(colour=pa.array(["red", "blue"]))), 2,
          ("unknown column 'colour'", "meta_")),
        f("misspelt column", _writer(lambda: _table(
            image=pa.array(["a.png"]), instrucion=pa.array(["x"]), seed=pa.array([1]))), 2,
          ("did you mean 'instruction'",)),
        f("seed as float", _writer(_with(seed=pa.array([1.0, 2.5]))), 2,
          ("seed must be an integer",)),
        f("seed as text", _writer(_with(seed=pa.array(["1", "two"]))), 2,
          ("column 'seed' has type string",)),
        f("seed as bool", _writer(_with(seed=pa.array([True, False]))), 2,
          ("column 'seed' has type bool",)),
        f("instruction as integers", _writer(_with(instruction=pa.array([1, 2]))), 2,
          ("column 'instruction' has type int64",)),
        f("image as a list column", _writer(_with(image=pa.array([["a.png"], ["b.png"]]))), 2,
          ("column 'image' has type list",)),
        f("image column all null", _writer(_with(image=pa.array([None, None], pa.null()))), 2,
          ("every row is null",)),
        f("duplicate column names", _duplicate_columns, 2, ("appears 2 times",)),
        f("seeds past int64 (uint64 column)", _writer(_with(seed=big_seeds)), 1,
          ("seed must be < 2**63",)),
        f("--max-pixels 0", _flag(["--max-pixels", "0"]), 2, ("must be at least 1",)),
        f("--image-root that does not exist", _flag(["--image-root", "/no/such/folder"]), 2,
          ("--image-root", "is not a local folder")),
        f("--image-root with an unreadable scheme", _flag(["--image-root", "ftp://host/dir"]), 2,
          ("remote roots must use a scheme",)),
        f("manifest is a named pipe (FIFO)", _fifo_manifest, 2,
          ("named pipe (FIFO), not a regular file",)),
        f("damaged data page behind a valid footer", _damaged_page, 2,
          ("is damaged", "write the file again")),
        f("'prompt' column instead of 'instruction'", _writer(lambda: _table(
            image=pa.array(["a.png"]), prompt=pa.array(["x"]), seed=pa.array([1]))), 2,
          ("did you mean 'instruction'",)),
        f("--store with a scheme pyarrow does not know", _flag(["--store", "foo://bucket/x"]), 2,
          ("--store 'foo://bucket/x'", "scheme 'foo'")),
        f("--out below a regular file", _out_below_a_file, 2, ("is a file, not a folder",)),
    ]


@dataclass
class FileOutcome:
    kind: FileKind
    code: int | str
    stderr: str
    results: list[dict[str, Any]]


@pytest.fixture(scope="module")
def file_runs(tmp_path_factory) -> list[FileOutcome]:
    outcomes = []
    for i, kind in enumerate(_file_kinds()):
        folder = tmp_path_factory.mktemp(f"bad-file-{i}")
        (folder / "images").mkdir()
        (folder / "images" / "a.png").write_bytes(img.png())
        extra = kind.make(folder)
        out = folder / "out"
        code, stderr = _cli(_run_args(folder / kind.manifest_name, out, "--no-report", *extra))
        results_files = list((out / "runs").glob("*/results.parquet")) if out.exists() else []
        results = pq.read_table(results_files[0]).to_pylist() if results_files else []
        outcomes.append(FileOutcome(kind, code, stderr, results))
    return outcomes


# -- judging ---------------------------------------------------------------------------------
def _judge_row(kind: RowKind, row: dict[str, Any] | None, id_counts: Counter[str]
               ) -> str | None:
    """None when the row ended as the kind requires, else what is wrong."""
    if row is None:
        return "row missing from results"
    if kind.id_taken_later and id_counts[row["row_id"]] != 1:
        return f"row_id {row['row_id']!r} is shared with another row"
    if kind.fails_with:
        if row["status"] != "failed":
            return f"status {row['status']!r}, want failed"
        if row["error_class"] != "bad-row":
            return f"error_class {row['error_class']!r}, want bad-row"
        missing = [s for s in kind.fails_with if s not in (row["reason"] or "")]
        return f"reason {row['reason']!r} lacks {missing}" if missing else None
    if row["status"] != "done":
        return f"status {row['status']!r} ({row['reason']}), want done"
    if not row["output_uri"] or not Path(row["output_uri"]).is_file():
        return "no output file"
    missing = [s for s in kind.notes if s not in (row["notes"] or "")]
    if missing:
        return f"notes {row['notes']!r} lack {missing}"
    if kind.truncated is not None and row["truncated"] is not kind.truncated:
        return f"truncated {row['truncated']!r}, want {kind.truncated}"
    return None


def _judge_file(outcome: FileOutcome) -> str | None:
    kind, code = outcome.kind, outcome.code
    if code != kind.exit_code:
        return f"exit {code!r}, want {kind.exit_code}; stderr: {outcome.stderr[-500:]}"
    if kind.exit_code == 2:
        missing = [s for s in kind.message if s not in outcome.stderr]
        return f"stderr lacks {missing}: {outcome.stderr[-500:]}" if missing else None
    if not outcome.results or any(r["status"] != "failed" for r in outcome.results):
        return f"want every row failed, got {[r['status'] for r in outcome.results]}"
    bad = [r["reason"] for r in outcome.results
           if not all(s in (r["reason"] or "") for s in kind.message)]
    return f"reasons lack {kind.message}: {bad}" if bad else None


def _is_crash(code: int | str) -> bool:
    return not isinstance(code, int) or code not in (0, 1, 2)


def test_bad_input_summary_line(row_run: RowRun, file_runs: list[FileOutcome],
                                tmp_path: Path) -> None:
    by_index = {r["row_index"]: r for r in row_run.results}
    id_counts = Counter(r["row_id"] for r in row_run.results)
    problems: dict[str, str] = {}
    crashes = 0
    if _is_crash(row_run.exit_code):
        crashes += len(row_run.kinds)  # every row kind went down with the run
        problems["(row run)"] = f"{row_run.exit_code}: {row_run.stderr[-2000:]}"
    for kind in row_run.kinds:
        issue = _judge_row(kind, by_index.get(row_run.kind_rows[kind.name]), id_counts)
        if issue:
            problems[kind.name] = issue
    for outcome in file_runs:
        crashes += _is_crash(outcome.code)
        issue = _judge_file(outcome)
        if issue:
            problems[outcome.kind.name] = issue
    lost = sum(1 for i in range(row_run.rows_total)
               if i not in by_index or by_index[i]["status"] not in ("done", "cache-hit", "failed"))
    tried = len(row_run.kinds) + len(file_runs)
    handled = tried - len([k for k in problems if k != "(row run)"])
    line = (f"{tried} bad inputs tried, {handled} handled with a reason, {crashes} crashes, "
            f"{lost} rows lost")
    print("\n" + line)
    for name, issue in problems.items():
        print(f"  NOT HANDLED: {name}: {issue}")
    summary = tmp_path / "hardening-summary.txt"
    summary.write_text(line + "\n")
    assert tried >= 40
    assert summary.read_text() == (f"{tried} bad inputs tried, {tried} handled with a reason, "
                                   "0 crashes, 0 rows lost\n"), problems
    assert row_run.exit_code == 1  # rows failed, the run finished


def test_every_kind_is_distinct_and_names_its_problem() -> None:
    names = [k.name for k in _row_kinds(Path("/o"), Path("/e"))] + [k.name for k in _file_kinds()]
    assert len(names) == len(set(names))
    assert all(k.message for k in _file_kinds())


def test_outputs_are_named_by_key_never_by_user_text(row_run: RowRun) -> None:
    """Row ids, product ids and variants full of '../' and HTML never reach a file name: the
    store holds only <sha256>.<ext>, nothing is written outside the output folder, and the
    review page's own files (thumbnails, contact sheets) have plain sanitised names."""
    done = [r for r in row_run.results if r["status"] == "done"]
    assert done
    for row in done:
        path = Path(row["output_uri"])
        assert path.name == f"{row['key']}.png" and path.is_relative_to(row_run.out / "store")
    escaped = [p for p in row_run.out.rglob("*") if not p.resolve().is_relative_to(
        row_run.out.resolve())]
    assert escaped == []
    assert not Path("/tmp/evil").exists()
    run_dir = next((row_run.out / "runs").iterdir())
    review_files = [p for d in ("review", "sheets") for p in (run_dir / d).rglob("*")
                    if p.is_file()]
    assert review_files
    unsafe = [p.name for p in review_files if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*",
                                                               p.name)]
    assert unsafe == []


def test_truncated_column_marks_only_overlong_instructions(row_run: RowRun) -> None:
    done = {r["meta_kind"]: r for r in row_run.results if r["status"] == "done"}
    truncated = {name for name, r in done.items() if r["truncated"]}
    # tiny-random keeps 16 T5 tokens (its tokenizer is nearly character-level)
    assert {"instruction over the T5 limit", "100 kB instruction",
            "HTML/script in the instruction"} <= truncated
    short = [r for r in done.values() if r["instruction"] == GOOD_INSTRUCTION]
    assert len(short) > 15 and all(r["truncated"] is False for r in short)
    assert all(TRUNCATED_NOTE in done[name]["notes"] for name in truncated)
    records = [line for line in (next((row_run.out / "runs").iterdir()) / "ledger.jsonl")
               .read_text().splitlines() if '"outcome":"ok"' in line]
    assert sum('"truncated":true' in line for line in records) == len(truncated)


def test_report_counts_agree_with_results_despite_bad_rows(row_run: RowRun) -> None:
    """The report is written for a run whose bad rows mostly never reached an actor (they
    cost nothing), and its row counts match the results table: every row id is distinct,
    even for a repeated row or a duplicate id, so no two rows merge in the report."""
    import json

    run_dir = next((row_run.out / "runs").iterdir())
    rows = json.loads((run_dir / "report.json").read_text())["figures"]["rows"]
    statuses = [r["status"] for r in row_run.results]
    assert len({r["row_id"] for r in row_run.results}) == row_run.rows_total
    assert rows["total"] == row_run.rows_total
    assert (rows["done"], rows["failed"]) == (statuses.count("done"), statuses.count("failed"))
    assert rows["unfinished"] == 0 and statuses.count("failed") >= 30
    assert (run_dir / "review.html").exists()


# -- pages and reports -----------------------------------------------------------------------
class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_pages_escape_every_piece_of_user_text(row_run: RowRun) -> None:
    """Instructions, row ids, product ids and variants full of markup appear in the review
    page and the report only as text: no element or attribute comes from them."""
    run_dir = next((row_run.out / "runs").iterdir())
    review = (run_dir / "review.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(" in review  # the text is there, escaped
    assert "&lt;img src=x onerror=alert(2)&gt;" in review
    for page in ("review.html", "report.html"):
        text = (run_dir / page).read_text(encoding="utf-8")
        for raw in (INJECTION, "<img src=x onerror", "<b>passwd</b>", '<script>alert("x")'):
            assert raw not in text, (page, raw)
        parser = _Tags()
        parser.feed(text)
        handlers = [(tag, name) for tag, attrs in parser.tags for name in attrs
                    if name.startswith("on")]
        assert handlers == [], page
        scripts = [attrs for tag, attrs in parser.tags if tag == "script"]
        assert all(a in ({"src": "review.js", "defer": None},
                         {"type": "application/json", "id": "review-data"}) for a in scripts)
        images = [attrs.get("src") or "" for tag, attrs in parser.tags if tag == "img"]
        assert all(src and "://" not in src and not src.startswith(("/", "javascript:", "x"))
                   for src in images), page
    report_md = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "<img" not in report_md and "<script" not in report_md


def test_review_never_shows_a_source_the_run_refused(row_run: RowRun) -> None:
    """A row refused for pointing outside the manifest's folder (or past --max-pixels) must
    not have that file decoded into the review page or a contact sheet."""
    run_dir = next((row_run.out / "runs").iterdir())
    shown = [p.name for p in (run_dir / "review" / "sources").iterdir()]
    assert any("ok.png" in name for name in shown)  # ordinary sources are shown
    assert any("_extra_" in name for name in shown)  # and one under --image-root
    for refused in ("secret", "link", "bomb49", "bomb400"):
        assert not any(refused in name for name in shown), (refused, shown)

