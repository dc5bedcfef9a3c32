"""Fuzzing (hypothesis): image bytes, manifest rows and manifest schemas.

- Any bytes given to the decoder come back as an upright RGB image or as ImageDecodeError
  with a reason; never another exception.
- Any rows (every column random, nulls included) are planned into exactly one outcome each:
  a task for an actor, a follower of a task with the same key, or a failed row with a reason
  (and one ledger record). No row is lost or doubled, planning never raises.
- Any schema (random column names and types) is either refused with a ConfigError naming the
  problem (exit code 2 at the CLI) or accepted, and then every row is yielded once.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import hardening_images as img
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from manifests import ManifestRow
from pipeline.cache import ModelSettings
from pipeline.digests import SourceDigests
from pipeline.errors import ConfigError
from pipeline.image_io import ImageDecodeError, decode_image
from pipeline.ledger import LedgerWriter, read_ledger
from pipeline.manifest_input import BadRow, check_manifest, iter_manifest
from pipeline.outcomes import Outcomes
from pipeline.plan import RowDefaults, plan_run
from pipeline.resume import RunHistory
from pipeline.store import Store

FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])

# -- image bytes -----------------------------------------------------------------------------
_SEEDS = [img.png(), img.jpeg(), img.animated_gif(), img.gray16_png()[0], img.rgb16_png(),
          img.palette_png_with_transparency(), img.exif_rotated_jpeg(6)[0], img.cmyk_jpeg(),
          img.save(img.pattern(), "WEBP", quality=80), img.save(img.pattern(), "BMP"),
          img.save(img.pattern(), "TIFF"), img.bomb_png(3000, 3000)]


@st.composite
def mangled_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(_SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        how = draw(st.sampled_from(["flip", "cut", "insert", "zero-run"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if how == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif how == "cut":
            del data[at:]
        elif how == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[at:at + 32] = b"\x00" * len(data[at:at + 32])
    return bytes(data)


@settings(FUZZ, max_examples=250)
@given(data=st.one_of(mangled_images(), st.binary(max_size=256)))
def test_decoder_returns_rgb_or_refuses_with_a_reason(data: bytes) -> None:
    try:
        decoded = decode_image(data, max_pixels=4_000_000)
    except ImageDecodeError as exc:
        event("refused")
        assert str(exc).strip() and ("replace" in str(exc) or "limit" in str(exc)
                                     or "downscale" in str(exc) or "save it" in str(exc))
        return
    event("decoded")
    assert decoded.image.mode == "RGB"
    assert decoded.image.width * decoded.image.height <= 4_000_000
    assert decoded.image.width > 0 and decoded.image.height > 0
    decoded.image.tobytes()  # fully decoded, usable pixels


# -- rows ------------------------------------------------------------------------------------
IMAGES = ["img/good.png", "img/corrupt.png", "img/missing.png", "img/dir", "../outside.png",
          "/etc/hostname", "img/../img/good.png", "s3://bucket/x.png", "http://host/x.png",
          "file:///etc/hostname", "", "   ", None]
ROW_SCHEMA = pa.schema([
    ("image", pa.string()), ("instruction", pa.string()), ("seed", pa.int64()),
    ("row_id", pa.string()), ("product_id", pa.string()), ("variant", pa.string()),
    ("width", pa.int64()), ("height", pa.int64()), ("steps", pa.int64()),
    ("guidance", pa.float64()), ("output_format", pa.string()), ("meta_note", pa.string()),
])
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60)
_row = st.fixed_dictionaries({
    "image": st.sampled_from(IMAGES),
    "instruction": st.one_of(st.none(), _text, st.sampled_from(["make it blue", " ", ""])),
    "seed": st.one_of(st.none(), st.integers(-2**63, 2**63 - 1), st.integers(-3, 3)),
    "row_id": st.one_of(st.none(), st.sampled_from(["a", "b", "", " "]), _text),
    "product_id": st.one_of(st.none(), _text),
    "variant": st.one_of(st.none(), st.sampled_from(["v1", "", " "])),
    "width": st.one_of(st.none(), st.sampled_from([16, 32, 64, 100, 0, -16, 8192])),
    "height": st.one_of(st.none(), st.sampled_from([16, 32, 64, 100, 0, -16, 8192])),
    "steps": st.one_of(st.none(), st.integers(-2, 300)),
    "guidance": st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    "output_format": st.one_of(st.none(), st.sampled_from(["png", "JPG", "webp", "gif", ""])),
    "meta_note": st.one_of(st.none(), _text),
})


def _folder(base: Path) -> Path:
    folder = base / "m"
    (folder / "img" / "dir").mkdir(parents=True)
    (folder / "img" / "good.png").write_bytes(img.png())
    (folder / "img" / "corrupt.png").write_bytes(img.truncated(img.png()))
    (base / "outside.png").write_bytes(img.png())
    return folder


@settings(FUZZ, max_examples=80)
@given(rows=st.lists(_row, min_size=1, max_size=12))
def test_any_rows_plan_to_exactly_one_outcome_each(rows: list[dict]) -> None:
    with tempfile.TemporaryDirectory(prefix="kbfuzz") as tmp:
        base = Path(tmp)
        folder = _folder(base)
        manifest = folder / "manifest.parquet"
        pq.write_table(pa.table({c: [r[c] for r in rows] for c in ROW_SCHEMA.names},
                                schema=ROW_SCHEMA), manifest)
        checked = check_manifest(str(manifest))
        outcomes = Outcomes(checked.rows_total)
        ledger = LedgerWriter(base / "ledger.jsonl", "run-fuzz")
        digests = SourceDigests(None)
        try:
            plan = plan_run(checked, run_id="run-fuzz",
                            model=ModelSettings(model_fingerprint="fp", dtype="float32"),
                            defaults=RowDefaults(steps=4, guidance=2.5, output_format="png"),
                            digests=digests, store=Store(str(base / "store")),
                            history=RunHistory(), ledger=ledger, outcomes=outcomes)
        finally:
            digests.close()
            ledger.close()
        tasks = [t.row_index for t in plan.tasks]
        followers = [t.row_index for ts in plan.followers.values() for t in ts]
        failed = [i for i, s in enumerate(outcomes.status) if s == "failed"]
        accounted = tasks + followers + failed
        assert sorted(accounted) == list(range(len(rows)))  # each row once, none lost
        assert all((outcomes.reason[i] or "").strip() for i in failed)
        records = [r for r in read_ledger(base / "ledger.jsonl") if r["type"] == "attempt"]
        assert sorted(r["row_index"] for r in records) == sorted(failed)
        assert all(r["outcome"] == "failed-permanent" and r["error"] for r in records)
        ids = [outcomes.row_id[i] for i in failed] + [t.row_id for t in plan.tasks]
        assert len(ids) == len(set(ids))  # ids stay distinct (followers share content only)
        for task in plan.tasks:  # only readable local images under the folder get this far
            assert task.image.startswith(str(folder)) and os.path.isfile(task.image)


# -- schemas ---------------------------------------------------------------------------------
_TYPES = {
    "int64": (pa.int64(), lambda i: i), "uint64": (pa.uint64(), lambda i: 2**63 + i),
    "float64": (pa.float64(), lambda i: i + 0.5), "string": (pa.string(), lambda i: f"s{i}"),
    "bool": (pa.bool_(), lambda i: i % 2 == 0), "null": (pa.null(), lambda i: None),
    "list": (pa.list_(pa.string()), lambda i: [f"x{i}"]),
    "dict": (pa.dictionary(pa.int32(), pa.string()), lambda i: f"d{i % 2}"),
    "date": (pa.date32(), lambda i: i),
}
_NAMES = ["image", "instruction", "seed", "row_id", "product_id", "variant", "width", "height",
          "steps", "guidance", "output_format", "meta_x", "meta_", "Image", "seeds", "colour",
          "__index_level_0__", ""]


@settings(FUZZ, max_examples=80)
@given(columns=st.lists(st.tuples(st.sampled_from(_NAMES), st.sampled_from(list(_TYPES))),
                        min_size=0, max_size=8),
       n=st.integers(0, 5), required=st.booleans())
def test_any_schema_is_refused_with_a_reason_or_read_row_by_row(columns, n: int,
                                                                required: bool) -> None:
    if required:  # half the schemas start valid, so the accepting path is exercised too
        columns = [("image", "string"), ("instruction", "string"), ("seed", "int64"), *columns]
    arrays, names = [], []
    for name, kind in columns:
        arrow_type, value = _TYPES[kind]
        values = [value(i) for i in range(n)]
        arrays.append(pa.array(values, type=arrow_type) if kind != "dict" else
                      pa.array(values).dictionary_encode())
        names.append(name)
    with tempfile.TemporaryDirectory(prefix="kbfuzz") as tmp:
        manifest = Path(tmp) / "manifest.parquet"
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_arrays(arrays, names=names) if names else
                       pa.table({}), buf)
        manifest.write_bytes(buf.getvalue())
        try:
            checked = check_manifest(str(manifest))
        except ConfigError as exc:
            assert "cannot be used" in str(exc) and "Fix the file" in str(exc)
            return
        seen = [r.row_index for batch in iter_manifest(checked) for r in batch]
        assert seen == list(range(checked.rows_total))
        for batch in iter_manifest(checked):
            for row in batch:
                assert isinstance(row, (ManifestRow, BadRow))
                if isinstance(row, BadRow):
                    assert row.reason.strip()


@pytest.mark.parametrize("name", ["manifest.parquet", "m.csv"])
def test_a_directory_or_random_bytes_named_like_a_manifest_is_a_config_error(
        tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(os.urandom(512))
    with pytest.raises(ConfigError, match="not a Parquet file"):
        check_manifest(str(path))
