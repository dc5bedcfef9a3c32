"""Heat maps and review flags against known pixel differences."""

import numpy as np
import pytest
from PIL import Image

from pipeline.reports.changes import (
    COLOUR_LUT,
    ReviewThresholds,
    colourise,
    compare_to_source,
    thresholds_from_mapping,
)


def _solid(colour, size=(64, 64)):
    return Image.new("RGB", size, colour)


def _half_changed(size=64):
    arr = np.full((size, size, 3), 100, np.uint8)
    arr[:, size // 2:] = 250  # right half changed by 150/255
    return Image.fromarray(arr)


def test_identical_output_is_flagged_unchanged_with_a_cold_heat_map():
    src = _half_changed()
    result = compare_to_source(src, src.copy(), ReviewThresholds())
    assert result.mean_diff == 0.0 and result.changed_fraction == 0.0
    assert "unchanged" in result.flags and "spread" not in result.flags
    assert set(map(tuple, np.asarray(result.heat.convert("RGB")).reshape(-1, 3))) == {tuple(COLOUR_LUT[0])}


def test_half_frame_change_is_neither_unchanged_nor_spread_and_heat_map_shows_where():
    src = _solid((100, 100, 100))
    out = _half_changed()
    result = compare_to_source(src, out, ReviewThresholds())
    assert result.changed_fraction == pytest.approx(0.5)
    assert result.mean_diff == pytest.approx(0.5 * 150 / 255, abs=1e-3)
    assert result.flags == ()
    heat = np.asarray(result.heat.convert("RGB")).astype(int)
    assert (heat[:, :32] == COLOUR_LUT[0]).all()  # left half: no change, coldest colour
    assert heat[:, 40:].sum(axis=2).min() > heat[:, :32].sum(axis=2).max()  # right half hotter


def test_whole_frame_change_is_spread_and_flat_output_is_blank():
    src = _half_changed()
    out = _solid((0, 0, 0))
    result = compare_to_source(src, out, ReviewThresholds())
    assert "spread" in result.flags and "blank" in result.flags


def test_source_is_resized_to_the_output_and_aspect_change_is_flagged():
    src = _solid((100, 100, 100), (200, 100))
    out = _solid((100, 100, 100), (64, 64))
    result = compare_to_source(src, out, ReviewThresholds())
    assert result.heat.size == (64, 64)
    assert "reframed" in result.flags and "unchanged" in result.flags


def test_thresholds_are_configurable_and_validated():
    src = _solid((100, 100, 100))
    out = _half_changed()
    strict = thresholds_from_mapping({"spread_fraction": 0.4})
    assert "spread" in compare_to_source(src, out, strict).flags
    loose = thresholds_from_mapping({"unchanged_mean_diff": 0.5})
    assert "unchanged" in compare_to_source(src, out, loose).flags
    with pytest.raises(ValueError, match="unknown review threshold.*spread_fractoin"):
        thresholds_from_mapping({"spread_fractoin": 0.4})
    with pytest.raises(ValueError, match="must be a number >= 0"):
        thresholds_from_mapping({"changed_pixel": -1})


def test_colour_map_is_monotonic_in_brightness_and_clips():
    ramp = np.linspace(0, 1, 11)[None, :].repeat(2, axis=0)
    pixels = np.asarray(colourise(ramp, full_scale=0.5).convert("RGB")).astype(int).sum(axis=2)[0]
    assert all(b >= a for a, b in zip(pixels, pixels[1:], strict=False))
    assert pixels[5] == pixels[10]  # 0.5 is full scale: everything above is the hottest colour


def _catalog_photo(product_fraction, background=(235, 235, 232), size=128, offset=0, texture=7):
    """A studio shot: a textured product (a centred square covering `product_fraction` of the
    frame, shifted right by `offset` pixels) on a plain background."""
    rng = np.random.default_rng(texture)
    arr = np.empty((size, size, 3), np.uint8)
    arr[:] = background
    side = round(size * product_fraction ** 0.5)
    top = (size - side) // 2
    left = top + offset
    arr[top:top + side, left:left + side] = rng.integers(30, 120, (side, side, 3))
    return Image.fromarray(arr), side * side / size ** 2


@pytest.mark.parametrize("product_fraction", [0.15, 0.30])
def test_new_background_behind_an_unchanged_product_is_not_spread(product_fraction):
    source, area = _catalog_photo(product_fraction)
    restaged, _ = _catalog_photo(product_fraction, background=(40, 90, 200))  # same product, blue studio
    result = compare_to_source(source, restaged, ReviewThresholds())
    assert result.changed_fraction == pytest.approx(1 - area, abs=0.01)  # the whole background changed
    assert "spread" not in result.flags and result.flags == ()


def test_re_rendered_product_on_a_new_background_is_spread():
    source, _ = _catalog_photo(0.20)
    # The product was redrawn (other texture) and moved: nothing of the source is left.
    drifted, _ = _catalog_photo(0.20, background=(40, 90, 200), offset=30, texture=8)
    result = compare_to_source(source, drifted, ReviewThresholds())
    assert result.changed_fraction > 0.92
    assert "spread" in result.flags
