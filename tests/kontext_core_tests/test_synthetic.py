"""Synthetic product photos and exact edit targets (kontext_core.synthetic)."""

from __future__ import annotations

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from kontext_core.synthetic import (
    COLOURS,
    DEMO_PRODUCTS,
    EDIT_KINDS,
    PRODUCTS,
    Scene,
    all_backgrounds,
    batch_arrays,
    benchmark,
    demo_examples,
    instruction_vocabulary,
    instruction_words,
    render,
    sample_batch,
    sample_example,
    split_of,
)
from kontext_core.synthetic.palette import parse_background

DEMO_DIR = Path(__file__).resolve().parents[2] / "manifests" / "examples" / "demo"
MANIFEST_COLUMNS = ["image", "instruction", "seed", "row_id", "product_id", "variant"]


def _batch_of(kind: str, n: int = 40, size: int = 64, seed: int = 5):
    return sample_batch(seed, n, size, kinds=[kind])


def _content_hash(example) -> str:
    return hashlib.sha256(example.source.tobytes() + example.instruction.encode()).hexdigest()


# --- determinism and splits -------------------------------------------------------------------


def test_same_seed_gives_same_bytes_and_other_seeds_differ():
    first, again = sample_batch(7, 12), sample_batch(7, 12)
    for a, b in zip(first, again, strict=True):
        assert a.source.tobytes() == b.source.tobytes()
        assert a.target.tobytes() == b.target.tobytes()
        assert a.mask.tobytes() == b.mask.tobytes()
        assert (a.instruction, a.edit_kind, a.source_scene) == (b.instruction, b.edit_kind, b.source_scene)
    other = sample_batch(8, 12)
    assert [_content_hash(e) for e in first] != [_content_hash(e) for e in other]


def test_batch_prefix_does_not_depend_on_batch_length():
    short, long = sample_batch(3, 3), sample_batch(3, 6)
    assert [_content_hash(e) for e in short] == [_content_hash(e) for e in long[:3]]


def test_train_and_eval_streams_are_disjoint():
    train = [e for seed in range(15) for e in sample_batch(seed, 20, size=32, split="train")]
    evals = [e for seed in range(15) for e in sample_batch(seed, 20, size=32, split="eval")]
    train_hashes = {_content_hash(e) for e in train}
    eval_hashes = {_content_hash(e) for e in evals}
    assert len(train_hashes) > 250 and len(eval_hashes) > 250  # streams are varied
    assert not train_hashes & eval_hashes
    assert all(split_of(e.source, e.instruction) == "train" for e in train)
    assert all(split_of(e.source, e.instruction) == "eval" for e in evals)


def test_split_assignment_is_balanced_over_unfiltered_examples():
    rng = np.random.default_rng(0)
    splits = [split_of(e.source, e.instruction) for e in (sample_example(rng, 32) for _ in range(300))]
    assert 100 < splits.count("eval") < 200


def test_invalid_arguments_name_the_fix():
    with pytest.raises(ValueError, match="split 'test'.*train"):
        sample_batch(0, 1, split="test")
    with pytest.raises(ValueError, match="seed -1"):
        sample_batch(-1, 1)
    with pytest.raises(ValueError, match="edit kinds.*'resize'.*recolour"):
        sample_batch(0, 1, kinds=["resize"])
    with pytest.raises(ValueError, match="product_colour 'teal'"):
        Scene("mug", "teal", "solid:red")
    with pytest.raises(ValueError, match="product 'chair'"):
        Scene("chair", "red", "solid:blue")
    with pytest.raises(ValueError, match="background 'plaid:red'"):
        Scene("mug", "red", "plaid:red")
    with pytest.raises(ValueError, match="two different colours"):
        parse_background("gradient:red-red")
    with pytest.raises(ValueError, match="render size"):
        render(Scene("mug", "red", "solid:blue"), size=8)


# --- edit invariants -------------------------------------------------------------------------


def test_background_edits_keep_product_pixels_and_change_the_background():
    for e in _batch_of("background"):
        assert e.source_scene.background != e.target_scene.background
        assert np.array_equal(e.source[e.mask], e.target[e.mask])
        changed = np.any(e.source != e.target, axis=-1)
        # at least the pattern area changes (dots of one colour -> dots of another: ~28%)
        assert changed[~e.mask].mean() > 0.2, (e.source_scene.background, e.target_scene.background)
        assert e.target_scene == type(e.source_scene)(
            **{**e.source_scene.__dict__, "background": e.target_scene.background}
        )


def test_recolour_changes_only_product_pixels():
    for e in _batch_of("recolour"):
        assert e.source_scene.product_colour != e.target_scene.product_colour
        changed = np.any(e.source != e.target, axis=-1)
        assert not changed[~e.mask].any()
        assert changed[e.mask].mean() > 0.3


@pytest.mark.parametrize("kind", ["add-shadow", "remove-shadow"])
def test_shadow_edits_touch_only_pixels_near_the_product_base(kind):
    size = 64
    centres = (np.arange(size) + 0.5) / size
    for e in _batch_of(kind, size=size):
        assert e.source_scene.shadow == (kind == "remove-shadow")
        assert e.target_scene.shadow == (kind == "add-shadow")
        changed = np.any(e.source != e.target, axis=-1)
        assert changed.any()
        assert not (changed & e.mask).any()
        rows = centres[np.nonzero(changed)[0]]
        assert np.all(np.abs(rows - e.source_scene.base_y) <= 0.1)
        darker, lighter = (e.target, e.source) if kind == "add-shadow" else (e.source, e.target)
        assert np.all(darker.astype(int) <= lighter.astype(int))


def test_instructions_name_the_target():
    for e in sample_batch(11, 120):
        words = instruction_words(e.instruction)
        target = e.target_scene
        if e.edit_kind == "recolour":
            assert target.product_colour in words
        elif e.edit_kind == "background":
            form, colours = parse_background(target.background)
            named = [w for w in words if w in COLOURS]
            if form == "studio":
                assert "studio" in words
            else:
                assert named == list(colours), (e.instruction, target.background)
        else:
            assert "shadow" in words and (("remove" in words) or ("delete" in words)
                                          or ("away" in words)) == (e.edit_kind == "remove-shadow")


def test_kinds_filter_and_batch_arrays():
    examples = sample_batch(2, 10, size=32, kinds=["recolour", "add-shadow"])
    assert {e.edit_kind for e in examples} <= {"recolour", "add-shadow"}
    arrays = batch_arrays(examples)
    assert arrays["sources"].shape == (10, 32, 32, 3) and arrays["sources"].dtype == np.uint8
    assert arrays["masks"].shape == (10, 32, 32) and arrays["masks"].dtype == bool
    assert arrays["instructions"] == [e.instruction for e in examples]


def test_every_edit_kind_occurs_in_default_sampling():
    assert {e.edit_kind for e in sample_batch(1, 60, size=32)} == set(EDIT_KINDS)


# --- rendering -------------------------------------------------------------------------------


@pytest.mark.parametrize("product", PRODUCTS)
@pytest.mark.parametrize("size", [64, 128])
def test_every_product_renders_with_a_sensible_mask(product, size):
    for mirror in (False, True):
        scene = Scene(product, "red", "solid:blue", True, 0.5, 0.85, 0.45, 1.0, mirror)
        image, mask = render(scene, size)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert mask.shape == (size, size) and mask.dtype == bool
        assert 0.02 < mask.mean() < 0.5
        rows = np.nonzero(mask.any(axis=1))[0]
        assert abs((rows.max() + 1) / size - 0.85) < 0.03  # stands on base_y
        assert abs(rows.min() / size - 0.40) < 0.15  # top near base_y - height
        # background pixels far from the product are exactly the solid colour
        assert np.all(image[0, 0] == COLOURS["blue"])
        # product is not flat: shading and highlight give a range of values
        assert np.ptp(image[mask].astype(int).sum(axis=1)) > 60


def test_mirror_flips_asymmetric_products():
    base = Scene("mug", "red", "solid:blue", False, 0.5, 0.85, 0.45)
    _, left = render(base, 64)
    _, right = render(Scene(**{**base.__dict__, "mirror": True}), 64)
    assert np.array_equal(left[:, ::-1], right)


def test_every_background_renders_and_all_are_distinct():
    seen = set()
    for name in all_backgrounds():
        image, mask = render(Scene("bottle", "red", name, False), 64)
        seen.add(hashlib.sha256(image[~mask].tobytes()).hexdigest())
    assert len(seen) == len(all_backgrounds())


def test_studio_white_is_bright_with_a_vignette():
    image, mask = render(Scene("can", "red", "studio-white", False), 64)
    assert not mask[5, 32]
    centre, corner = image[5, 32].astype(int), image[0, 0].astype(int)
    assert np.all(centre > 235) and np.all(corner < centre) and np.all(corner > 200)


def test_example_mask_matches_render_of_both_scenes():
    for e in sample_batch(4, 8):
        src, src_mask = render(e.source_scene, 64)
        tgt, tgt_mask = render(e.target_scene, 64)
        assert np.array_equal(src, e.source) and np.array_equal(tgt, e.target)
        assert np.array_equal(src_mask, e.mask) and np.array_equal(tgt_mask, e.mask)


# --- vocabulary ------------------------------------------------------------------------------


def test_instruction_vocabulary_is_small_lower_case_and_covers_every_instruction():
    vocabulary = instruction_vocabulary()
    assert len(vocabulary) <= 80 and len(set(vocabulary)) == len(vocabulary)
    assert all(re.fullmatch("[a-z]+", w) for w in vocabulary)
    assert set(COLOURS) <= set(vocabulary) and set(PRODUCTS) <= set(vocabulary)
    for e in sample_batch(21, 300, size=32):
        assert e.instruction == " ".join(e.instruction.split())
        assert set(instruction_words(e.instruction)) <= set(vocabulary), e.instruction


# --- demo catalog ----------------------------------------------------------------------------


def test_demo_manifest_points_at_existing_images():
    table = pq.read_table(DEMO_DIR / "manifest.parquet")
    assert table.column_names == MANIFEST_COLUMNS
    assert str(table.schema.field("seed").type) == "int64"
    rows = table.to_pylist()
    assert 12 <= len(rows) <= 18
    assert len({r["row_id"] for r in rows}) == len(rows)
    for row in rows:
        path = DEMO_DIR / row["image"]
        assert not Path(row["image"]).is_absolute() and path.is_file(), row
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (128, 128)
        assert row["product_id"] in DEMO_PRODUCTS and row["seed"] >= 0
        assert set(instruction_words(row["instruction"])) <= set(instruction_vocabulary())


def test_demo_catalog_csv_lists_the_products():
    with open(DEMO_DIR / "catalog.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["product_id"] for r in rows] == list(DEMO_PRODUCTS)
    for row in rows:
        scene = DEMO_PRODUCTS[row["product_id"]]
        assert (row["product"], row["colour"]) == (scene.product, scene.product_colour)
        assert (DEMO_DIR / row["image"]).is_file()


def test_committed_demo_catalog_matches_the_generator(tmp_path):
    from pipeline.demo_catalog import write_demo_catalog

    write_demo_catalog(tmp_path)
    for committed in sorted((DEMO_DIR / "images").glob("*.png")):
        assert (tmp_path / "images" / committed.name).read_bytes() == committed.read_bytes()
    assert len(list((tmp_path / "images").glob("*.png"))) == len(DEMO_PRODUCTS)
    assert (tmp_path / "catalog.csv").read_text() == (DEMO_DIR / "catalog.csv").read_text()
    fresh = pq.read_table(tmp_path / "manifest.parquet")
    assert fresh.equals(pq.read_table(DEMO_DIR / "manifest.parquet"))


def test_demo_examples_have_exact_targets_for_the_committed_photos():
    examples = demo_examples()
    kinds = {e.edit_kind for _, e in examples}
    assert {"background", "recolour"} <= kinds
    for row, e in examples:
        photo = np.asarray(Image.open(DEMO_DIR / row["image"]).convert("RGB"))
        assert np.array_equal(photo, e.source)
        assert not np.array_equal(e.source, e.target)


def test_benchmark_prints_timing(capsys):
    best = benchmark(n=4, size=32, repeats=1)
    assert best > 0
    assert "sample_batch n=4 size=32" in capsys.readouterr().out
