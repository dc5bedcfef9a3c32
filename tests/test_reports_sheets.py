"""Contact sheets: one per product, the source first, failed rows as placeholders, pagination."""

import numpy as np
from PIL import Image

from pipeline.reports import generate_reports
from pipeline.reports.sheets import STATUS_COLOURS, Cell, SheetLayout, render_page, write_sheets
from pipeline.reports.synthetic import make_synthetic_run

PAD, CELL = 8, 256
CELL_W = CELL + PAD


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
    assert first.size[0] == PAD + 5 * CELL_W  # source + 4 variants in one row, 256 px cells
    # columns: 0 source, 1 done, 2 failed, 3 cache hit, 4 done
    assert _colour_columns(first, STATUS_COLOURS["source"])[:1] == [0]
    assert _colour_columns(first, STATUS_COLOURS["failed"]) == [2]
    assert _colour_columns(first, STATUS_COLOURS["cache-hit"]) == [3]
    assert _placeholder_columns(first) == [2]  # the hatched placeholder, only there
    assert set(_colour_columns(first, STATUS_COLOURS["done"])) == {1, 4}


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
