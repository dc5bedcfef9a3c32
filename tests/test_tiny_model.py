"""The shipped kontext-tiny makes the edits it is asked for (issue 4's quality thresholds).

These run the shipped weights on held-out synthetic scenes whose exact targets are known.
"""

import numpy as np
import pytest
from PIL import Image

from kontext_core import KontextEditor
from kontext_core.synthetic import demo_examples
from kontext_core.tiny.metrics import evaluate


@pytest.fixture(scope="module")
def editor():
    return KontextEditor.load("kontext-tiny")


@pytest.fixture(scope="module")
def metrics(editor):
    return evaluate(editor, n=64, progress=False)  # default step count


def test_background_edits_beat_no_edit_by_3x(metrics):
    assert metrics.background_n >= 15
    assert metrics.background_improvement >= 3.0, metrics.summary()


def test_recolour_edits_beat_no_edit_by_3x(metrics):
    assert metrics.recolour_n >= 15
    assert metrics.recolour_improvement >= 3.0, metrics.summary()


@pytest.mark.xfail(strict=True, reason="issue 4 open: shipped model reaches ~21 dB product PSNR; the small "
                   "autoencoder reconstructs product detail at ~23 dB (see MODEL_CARD.md)")
def test_background_edits_keep_the_product_at_25db(metrics):
    assert metrics.background_product_psnr >= 25.0, metrics.summary()


def test_demo_rows_move_towards_their_exact_targets(editor):
    """Every background / recolour row of the shipped demo: the output is clearly closer to the exact
    expected image than the source is, in the region the instruction talks about (each row ≥ 1.5×,
    all rows together ≥ 3×)."""
    rows = [(r, e) for r, e in demo_examples(size=64) if e.edit_kind in ("background", "recolour")]
    out = editor.edit([Image.fromarray(e.source) for _, e in rows], [r["instruction"] for r, _ in rows],
                      [r["seed"] for r, _ in rows])
    total_got = total_before = 0.0
    for (row, ex), image in zip(rows, out.images, strict=True):
        region = ex.mask if ex.edit_kind == "recolour" else ~ex.mask
        got = np.abs(np.asarray(image, dtype=float) - ex.target)[region].mean()
        before = np.abs(ex.source.astype(float) - ex.target)[region].mean()
        assert got < before / 1.5, f"{row['row_id']} {row['instruction']!r}: {got:.1f} vs no-edit {before:.1f}"
        total_got, total_before = total_got + got, total_before + before
    assert total_got < total_before / 3
