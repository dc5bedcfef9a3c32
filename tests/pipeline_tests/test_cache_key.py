"""The cache key changes with every pixel- or byte-relevant input and with nothing else.

Each case plans a two-row manifest whose rows differ in exactly one field (plus row_id,
which must never matter) and compares the two rows' keys.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from pipeline import encode
from pipeline.cache import (
    ModelSettings,
    RowSettings,
    cache_key,
    key_document,
    normalise_instruction,
)
from pipeline.digests import SourceDigests
from pipeline.image_io import DECODE_VERSION
from pipeline.ledger import LedgerWriter
from pipeline.manifest_input import check_manifest
from pipeline.outcomes import Outcomes
from pipeline.plan import RowDefaults, plan_run
from pipeline.resume import RunHistory
from pipeline.store import Store

MODEL = ModelSettings(model_fingerprint="f" * 64, dtype="float32", numerics="1")
DEFAULTS = RowDefaults(steps=4, guidance=2.5, output_format="png")
BASE = {"image": "a.png", "instruction": "put it on white", "seed": 7, "row_id": "r0",
        "product_id": "p1", "variant": "v1", "meta_sku": "S1"}


def _images(folder: Path) -> None:
    Image.new("RGB", (32, 32), (10, 20, 30)).save(folder / "a.png")
    Image.new("RGB", (32, 32), (10, 20, 31)).save(folder / "b.png")  # one value differs
    shutil.copy(folder / "a.png", folder / "a_copy.png")  # same bytes, other path


def plan_keys(tmp_path: Path, rows: list[dict], model: ModelSettings = MODEL,
              defaults: RowDefaults = DEFAULTS, run_id: str = "run-a") -> list[str | None]:
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    _images(folder)
    path = folder / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(path, index=False)
    checked = check_manifest(str(path))
    outcomes = Outcomes(checked.rows_total)
    run_dir = tmp_path / "runs" / run_id
    with LedgerWriter(run_dir / "ledger.jsonl", run_id) as ledger:
        plan_run(checked, run_id=run_id, model=model, defaults=defaults,
                 digests=SourceDigests(None), store=Store(str(tmp_path / "store")),
                 history=RunHistory(), ledger=ledger, outcomes=outcomes)
    return outcomes.key


def pair(change: dict) -> list[dict]:
    return [dict(BASE), {**BASE, "row_id": "r1", **change}]


CHANGES_KEY = {
    "image bytes": {"image": "b.png"},
    "instruction": {"instruction": "put it on black"},
    "instruction case": {"instruction": "Put it on white"},
    "seed": {"seed": 8},
    "steps": {"steps": 5},
    "guidance": {"guidance": 3.0},
    "size": {"width": 48, "height": 32},
    "output format": {"output_format": "jpeg"},
}
KEEPS_KEY = {
    "row_id only": {},
    "product_id": {"product_id": "p2"},
    "variant": {"variant": "v9"},
    "meta column": {"meta_sku": "S2"},
    "image path, same bytes": {"image": "a_copy.png"},
    "instruction whitespace": {"instruction": "  put   it on\twhite "},
    "steps equal to the default": {"steps": 4},
    "guidance equal to the default": {"guidance": 2.5},
    "format equal to the default": {"output_format": "png"},
}


@pytest.mark.parametrize("field", list(CHANGES_KEY))
def test_key_changes_with_pixel_relevant_field(tmp_path: Path, field: str) -> None:
    rows = pair(CHANGES_KEY[field])
    if field in ("steps", "guidance", "size", "output format"):
        # Optional columns must exist on both rows: row 0 keeps the default explicitly null.
        for col in CHANGES_KEY[field]:
            rows[0][col] = None
    k0, k1 = plan_keys(tmp_path, rows)
    assert k0 is not None and k1 is not None
    assert k0 != k1


@pytest.mark.parametrize("field", list(KEEPS_KEY))
def test_key_ignores_irrelevant_field(tmp_path: Path, field: str) -> None:
    rows = pair(KEEPS_KEY[field])
    for col in ("steps", "guidance", "output_format"):
        if col in KEEPS_KEY[field]:
            rows[0][col] = None
    k0, k1 = plan_keys(tmp_path, rows)
    assert k0 is not None and k0 == k1


def test_key_same_for_format_alias(tmp_path: Path) -> None:
    k0, k1 = plan_keys(tmp_path, [{**BASE, "output_format": "jpeg"},
                                  {**BASE, "row_id": "r1", "output_format": "jpg"}])
    assert k0 is not None and k0 == k1


def test_key_changes_with_model_fingerprint(tmp_path: Path) -> None:
    other = ModelSettings(model_fingerprint="e" * 64, dtype="float32", numerics="1")
    assert plan_keys(tmp_path, [BASE])[0] != plan_keys(tmp_path, [BASE], model=other)[0]


def test_key_changes_with_dtype(tmp_path: Path) -> None:
    bf16 = ModelSettings(model_fingerprint="f" * 64, dtype="bfloat16", numerics="1")
    assert plan_keys(tmp_path, [BASE])[0] != plan_keys(tmp_path, [BASE], model=bf16)[0]


def test_key_changes_with_defaults_that_reach_the_row(tmp_path: Path) -> None:
    base = plan_keys(tmp_path, [BASE])[0]
    assert plan_keys(tmp_path, [BASE], defaults=RowDefaults(6, 2.5, "png"))[0] != base
    assert plan_keys(tmp_path, [BASE], defaults=RowDefaults(4, 4.0, "png"))[0] != base
    assert plan_keys(tmp_path, [BASE], defaults=RowDefaults(4, 2.5, "webp"))[0] != base


def test_key_ignores_run_id(tmp_path: Path) -> None:
    assert plan_keys(tmp_path, [BASE], run_id="run-a") == plan_keys(tmp_path, [BASE],
                                                                     run_id="run-b")


def _row(**kw) -> RowSettings:
    return RowSettings(steps=kw.get("steps", 4), guidance=kw.get("guidance", 2.5),
                       size=kw.get("size"), output=kw.get("output", encode.output_spec("png")))


def test_key_changes_with_numerics_version_and_approximations() -> None:
    args = ("0" * 64, "edit", 1)
    base = cache_key(*args, MODEL, _row())
    assert cache_key(*args, ModelSettings("f" * 64, "float32", numerics="2"), _row()) != base
    fp8 = ModelSettings("f" * 64, "float32", numerics="1",
                        approximations={"fp8": True, "step_cache": None})
    assert cache_key(*args, fp8, _row()) != base


def test_key_changes_with_the_source_decoding_rules() -> None:
    args = ("0" * 64, "edit", 1)
    base = cache_key(*args, MODEL, _row())
    assert key_document(*args, MODEL, _row())["decode"] == DECODE_VERSION
    assert cache_key(*args, ModelSettings("f" * 64, "float32", numerics="1", decode="other"), _row()) != base


def test_key_changes_with_encoder_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    args = ("0" * 64, "edit", 1)
    before = cache_key(*args, MODEL, _row(output=encode.output_spec("jpeg")))
    monkeypatch.setitem(encode.ENCODERS, "jpeg", {**encode.ENCODERS["jpeg"], "quality": 80})
    after = cache_key(*args, MODEL, _row(output=encode.output_spec("jpeg")))
    assert before != after


def test_key_document_is_canonical_and_documented_fields_only() -> None:
    doc = key_document("0" * 64, " a  b ", 3, MODEL, _row(size=(48, 32)))
    assert set(doc) == {"schema", "image", "instruction", "seed", "model", "steps", "guidance",
                        "size", "dtype", "approximations", "output", "numerics", "decode"}
    assert doc["instruction"] == "a b" and doc["size"] == [48, 32]
    # ints and floats with equal values encode the same: guidance 3 == 3.0
    assert cache_key("0" * 64, "x", 1, MODEL, _row(guidance=3)) == \
        cache_key("0" * 64, "x", 1, MODEL, _row(guidance=3.0))


def test_normalise_instruction_keeps_case() -> None:
    assert normalise_instruction("  Make\n it\tRED  ") == "Make it RED"


def test_numerics_version_comes_from_kontext_core() -> None:
    import kontext_core
    from pipeline.cache import numerics_version

    assert numerics_version() == str(kontext_core.NUMERICS_VERSION)
