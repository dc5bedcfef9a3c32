"""Contact sheets: one per product, the source first, failed rows as placeholders, pagination."""

import numpy as np
import pytest
from PIL import Image
from synthetic_runs import make_synthetic_run

from pipeline.reports import generate_reports
from pipeline.reports.images import fill
from pipeline.reports.sheets import STATUS_COLOURS, Cell, SheetLayout, render_page, write_sheets

PAD, CELL = 8, 256
CELL_W = CELL + PAD
IMAGE_TOP = 13 + 18 + 5  # header (font size + 18), then the status stripe


def _colour_columns(sheet, colour):
    """Indices of grid columns holding at least one pixel of exactly `colour`."""
    arr = np.asarray(sheet.convert("RGB"))
    xs = np.nonzero((arr == np.array(colour, np.uint8)).all(axis=2).any(axis=0))[0]
    return sorted({(x - PAD) // CELL_W for x in xs if x >= PAD})


def _placeholder_columns(sheet):
    """Grid columns whose image box is mostly the placeholder fill (rows 40..280: first grid row)."""
    arr = np.asarray(sheet.convert("RGB"))[40:280]
    fill = (arr == np.array((236, 236, 236), np.uint8)).all(axis=2)
    columns = (arr.shape[1] - PAD) // CELL_W
    return [c for c in range(columns) if fill[:, PAD + c * CELL_W: PAD + c * CELL_W + CELL].mean() > 0.5]


def test_one_sheet_per_product_with_status_stripes_and_a_failed_placeholder(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=2, variants=4, failed=(1,), cache_hits=(2,))
    outputs = generate_reports(run.run_dir, progress=False)
    assert len(outputs.sheets) == 2
    first = Image.open(sorted(outputs.sheets)[0])
    # source + the 3 variants to review in one row, 256 px cells (the cache hit, row 2, is not
    # on the sheet: it was reviewed in the run that generated it)
    assert first.size[0] == PAD + 4 * CELL_W
    # columns: 0 source, 1 done, 2 failed, 3 done
    assert _colour_columns(first, STATUS_COLOURS["source"])[:1] == [0]
    assert _colour_columns(first, STATUS_COLOURS["failed"]) == [2]
    assert _colour_columns(first, STATUS_COLOURS["cache-hit"]) == []
    assert _placeholder_columns(first) == [2]  # the hatched placeholder, only there
    assert set(_colour_columns(first, STATUS_COLOURS["done"])) == {1, 3}


def test_long_groups_continue_on_pages_that_each_start_with_the_source(tmp_path):
    layout = SheetLayout(columns=3, max_grid_rows=2)  # 6 cells: source + 5 variants per page
    source = Cell(Image.new("RGB", (40, 40), (10, 200, 10)), ["source"], "source")
    variants = [Cell(Image.new("RGB", (40, 40), (200, 200, 10)), [f"v{i}", "seed 1"], "done") for i in range(12)]
    paths = write_sheets("product X", source, variants, layout, tmp_path, "x")
    assert [p.name for p in paths] == ["x-p1.png", "x-p2.png", "x-p3.png"]
    for path in paths:
        assert _colour_columns(Image.open(path), (10, 200, 10)) == [0]  # the source, top left
    assert Image.open(paths[0]).size[1] > Image.open(paths[2]).size[1]  # last page: one grid row


def test_missing_image_cells_are_labelled_placeholders_and_jpeg_sheets_work(tmp_path):
    cells = [Cell(None, ["bg-1", "seed 3"], "not-run", placeholder="NOT RUN")]
    sheet = render_page("p", [Cell(None, ["source"], "source", placeholder="NO SOURCE"), *cells], SheetLayout())
    assert _placeholder_columns(sheet) == [0, 1]
    paths = write_sheets("p", cells[0], cells, SheetLayout(format="jpeg"), tmp_path, "p")
    assert paths[0].suffix == ".jpg" and Image.open(paths[0]).format == "JPEG"


def _image_box(sheet, column, row=0, cell_h=None):
    """The pixels of one cell's CELL x CELL image box."""
    arr = np.asarray(sheet.convert("RGB"))
    top = IMAGE_TOP + row * (cell_h or 0)
    left = PAD + column * CELL_W
    return arr[top:top + CELL, left:left + CELL]


def _random_image(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_fill_enlarges_by_whole_factors_with_nearest_so_pixels_stay_real():
    small = _random_image(64, 48)
    big = fill(small, 256)
    assert big.size == (256, 192)  # aspect kept, longer side fills the box
    blocks = np.asarray(big).reshape(48, 4, 64, 4, 3)
    assert (blocks == np.asarray(small)[:, None, :, None, :]).all()  # every pixel a crisp 4x4 block


def test_fill_uses_lanczos_for_other_factors_and_shrinks_large_images():
    odd = _random_image(100, 100)
    assert np.array_equal(np.asarray(fill(odd, 256)), np.asarray(odd.resize((256, 256), Image.Resampling.LANCZOS)))
    assert fill(_random_image(1024, 512), 256).size == (256, 128)
    exact = _random_image(256, 200)
    assert fill(exact, 256) is exact


def test_small_outputs_fill_their_tile_like_the_larger_source():
    source, output = _random_image(128, 128, 1), _random_image(64, 64, 2)
    sheet = render_page("p", [Cell(source, ["source"], "source"), Cell(output, ["bg-1"], "done")], SheetLayout())
    for column, image, factor in ((0, source, 2), (1, output, 4)):
        box = _image_box(sheet, column)
        expected = np.asarray(image).repeat(factor, axis=0).repeat(factor, axis=1)
        assert np.array_equal(box, expected)  # whole box, NEAREST blocks of the real pixels


def test_run_with_half_size_outputs_shows_every_tile_at_full_size(tmp_path):
    run = make_synthetic_run(tmp_path / "out", products=1, variants=3, image_size=128, output_size=64)
    outputs = generate_reports(run.run_dir, progress=False)
    (sheet_path,) = outputs.sheets
    sheet = Image.open(sheet_path)
    source = Image.open(run.out_root / "sources" / "product-0.png").convert("RGB")
    assert np.array_equal(_image_box(sheet, 0), np.asarray(fill(source, 256)))
    for column, row in enumerate(run.rows, start=1):
        output = Image.open(row["output_uri"]).convert("RGB")
        assert output.size == (64, 64)
        box = _image_box(sheet, column).astype(int)
        expected = np.asarray(output).repeat(4, axis=0).repeat(4, axis=1).astype(int)
        assert np.array_equal(box[3:-3, 3:-3], expected[3:-3, 3:-3])  # inside any flag outline


@pytest.mark.parametrize("size", [40, 100])
def test_cells_of_any_size_fill_the_box_keeping_aspect(size):
    sheet = render_page("p", [Cell(Image.new("RGB", (size, size), (10, 200, 10)), ["s"], "source"),
                              Cell(Image.new("RGB", (size, size // 2), (200, 10, 10)), ["v"], "done")],
                        SheetLayout())
    assert (_image_box(sheet, 0) == (10, 200, 10)).all()
    wide = _image_box(sheet, 1)
    red_rows = (wide == (200, 10, 10)).all(axis=2).all(axis=1)
    assert red_rows.sum() == CELL // 2  # full width, half height: aspect kept
