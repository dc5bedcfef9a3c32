"""The shipped kontext-tiny makes the edits it is asked for (the quality targets of its MODEL_CARD.md).

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


def test_background_edits_keep_the_product_at_25db(metrics):
    assert metrics.background_product_psnr >= 25.0, metrics.summary()


_DEMO = [(r, e) for r, e in demo_examples(size=64) if e.edit_kind in ("background", "recolour")]
# Known failure, kept visible: the model paints two-colour gradients in the wrong order.
_KNOWN_BAD = {"demo-015": "kontext-tiny paints 'blue to white' gradients upside down (MODEL_CARD.md)"}


@pytest.fixture(scope="module")
def demo_outputs(editor):
    out = editor.edit([Image.fromarray(e.source) for _, e in _DEMO], [r["instruction"] for r, _ in _DEMO],
                      [r["seed"] for r, _ in _DEMO])
    return {r["row_id"]: np.asarray(im, dtype=float) for (r, _), im in zip(_DEMO, out.images, strict=True)}


def _errors(row_id, example, outputs):
    region = example.mask if example.edit_kind == "recolour" else ~example.mask
    got = np.abs(outputs[row_id] - example.target)[region].mean()
    before = np.abs(example.source.astype(float) - example.target)[region].mean()
    return got, before


@pytest.mark.parametrize("row_id", [
    pytest.param(r["row_id"], marks=pytest.mark.xfail(strict=True, reason=_KNOWN_BAD[r["row_id"]]))
    if r["row_id"] in _KNOWN_BAD else r["row_id"] for r, _ in _DEMO
])
def test_demo_row_moves_towards_its_exact_target(row_id, demo_outputs):
    """Each background / recolour row of the shipped demo: in the region the instruction talks
    about, the output is at least 1.5x closer to the exact expected image than the source is."""
    row, example = next((r, e) for r, e in _DEMO if r["row_id"] == row_id)
    got, before = _errors(row_id, example, demo_outputs)
    assert got < before / 1.5, f"{row_id} {row['instruction']!r}: {got:.1f} vs no-edit {before:.1f}"


def test_demo_rows_together_beat_no_edit_by_3x(demo_outputs):
    pairs = [_errors(r["row_id"], e, demo_outputs) for r, e in _DEMO if r["row_id"] not in _KNOWN_BAD]
    assert sum(g for g, _ in pairs) < sum(b for _, b in pairs) / 3
