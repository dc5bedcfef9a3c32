"""Contact-sheet captions draw the characters our reasons and flags use (≥, ×, —, …), not the
font's missing-glyph box."""

import pytest

from pipeline.reports.sheets import font

MISSING = "\U0010fffd"  # a private-use code point no font draws: its bitmap is the missing-glyph box


def _bitmap(fnt, text: str) -> tuple[tuple[int, int], bytes]:
    mask = fnt.getmask(text)
    return mask.size, bytes(mask)


@pytest.mark.parametrize("char", ["≥", "×", "—", "…", "é", "²"])
def test_caption_font_has_a_glyph_for(char):
    fnt = font(14)
    assert _bitmap(fnt, char) != _bitmap(fnt, MISSING), f"{char!r} is drawn as the missing-glyph box"


def test_a_caption_with_a_limit_reads_differently_from_boxes():
    fnt = font(14)
    assert _bitmap(fnt, "width ≥ 4096 px") != _bitmap(fnt, f"width {MISSING} 4096 px")
