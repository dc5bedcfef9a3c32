"""Contact sheets: per product (or per source image), the source then every variant, captioned.

Each cell is an image scaled to fill its square box (small model outputs are enlarged to the
source's displayed size; images.fill), with a coloured status stripe (green done, blue cache hit, red failed,
grey not run) and caption lines (variant or instruction, seed and status, cost, flags). Rows
without an image get a labelled placeholder. Long groups continue on further pages, each page
starting again with the source so it can be reviewed on its own.

Chains of edits (rows on another row's output) are strips: each starts a grid row with its
source, then step 1, step 2, ... with an arrow from each step to the next (``write_strips``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from .images import fill

STATUS_COLOURS = {
    "source": (60, 60, 60), "done": (46, 160, 67), "cache-hit": (50, 110, 200),
    "failed": (200, 40, 40), "not-run": (150, 150, 150),
}
FLAG_COLOUR = (235, 130, 0)
BACKGROUND = (250, 250, 250)
TEXT = (30, 30, 30)


@dataclass(frozen=True)
class SheetLayout:
    cell: int = 256  # thumbnail box, pixels
    columns: int = 6
    max_grid_rows: int = 6  # per page; a 6 x 6 page of 256 px cells is about 1.6k x 2.1k pixels
    font_size: int = 13
    format: str = "png"  # png or jpeg

    def __post_init__(self) -> None:
        if self.format not in ("png", "jpeg"):
            raise ValueError(f"sheet format {self.format!r} is not supported; use png or jpeg")
        if self.columns < 2 or self.max_grid_rows < 1 or self.cell < 32:
            raise ValueError("sheet layout needs columns >= 2, max_grid_rows >= 1 and cell >= 32 pixels")


@dataclass
class Cell:
    image: Image.Image | None  # RGB image (any size; scaled to fill the cell); None: placeholder
    lines: list[str]
    status: str  # a STATUS_COLOURS key
    placeholder: str = ""  # label drawn when image is None, e.g. "FAILED"
    placeholder_detail: str = ""
    flags: list[str] = field(default_factory=list)
    follows: bool = False  # a chain's next step: an arrow leads in from the cell before it


# DejaVu Sans ships with the package (its licence beside it): Pillow's own default font has no
# glyph for characters our captions and reasons use (≥, ×, —), which it draws as boxes.
CAPTION_FONT = Path(__file__).with_name("fonts") / "DejaVuSans.ttf"


@lru_cache(maxsize=8)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(str(CAPTION_FONT), size)
    except OSError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def ellipsise(text: str, fnt: ImageFont.ImageFont, width: int) -> str:
    """`text` on one line, cut with an ellipsis to fit `width` pixels."""
    text = " ".join(text.split())
    if fnt.getlength(text) <= width:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # longest prefix that fits with the ellipsis
        mid = (lo + hi + 1) // 2
        if fnt.getlength(text[:mid] + "…") <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo] + "…"


def _placeholder(sheet: Image.Image, box: tuple[int, int, int, int], label: str, detail: str,
                 colour: tuple[int, int, int], layout: SheetLayout) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0 + 1, y1 - y0 + 1
    tile = Image.new("RGB", (w, h), (236, 236, 236))
    draw = ImageDraw.Draw(tile)
    for offset in range(-h, w, 24):  # light hatching says "no image here"
        draw.line([(offset, h), (offset + h, 0)], fill=(222, 222, 222), width=1)
    draw.rectangle((0, 0, w - 1, h - 1), outline=colour, width=2)
    big, small = font(layout.font_size + 9), font(layout.font_size)
    draw.text((w // 2, h // 2 - 10), label, fill=colour, font=big, anchor="mm")
    if detail:
        draw.text((w // 2, h // 2 + 16), ellipsise(detail, small, w - 12), fill=TEXT, font=small, anchor="mm")
    sheet.paste(tile, (x0, y0))


def render_page(title: str, cells: list[Cell], layout: SheetLayout) -> Image.Image:
    """One sheet image for at most columns x max_grid_rows cells."""
    columns = min(layout.columns, max(1, len(cells)))
    return _render(title, [(i % columns, i // columns, c) for i, c in enumerate(cells)], columns,
                   layout)


def _render(title: str, placed: list[tuple[int, int, Cell]], columns: int,
            layout: SheetLayout) -> Image.Image:
    """A sheet of cells at (column, grid row) positions."""
    cells = [c for _, _, c in placed]
    fnt = font(layout.font_size)
    line_h = layout.font_size + 4
    caption_lines = max((len(c.lines) + (1 if c.flags else 0) for c in cells), default=1)
    pad = 8
    stripe = 5
    cell_w = layout.cell + pad
    cell_h = stripe + layout.cell + 4 + caption_lines * line_h + pad
    grid_rows = max((row for _, row, _ in placed), default=0) + 1
    header_h = layout.font_size + 18
    sheet = Image.new("RGB", (pad + columns * cell_w, header_h + grid_rows * cell_h + pad), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad), ellipsise(title, font(layout.font_size + 3), sheet.width - 2 * pad), fill=TEXT,
              font=font(layout.font_size + 3))
    for col, row, cell in placed:
        x = pad + col * cell_w
        y = header_h + row * cell_h
        colour = STATUS_COLOURS.get(cell.status, STATUS_COLOURS["not-run"])
        if cell.follows and col > 0:  # the arrow in the gap, from the previous step to this one
            mid = y + stripe + layout.cell // 2
            draw.polygon([(x - pad + 1, mid - 6), (x - 1, mid), (x - pad + 1, mid + 6)], fill=TEXT)
        draw.rectangle((x, y, x + layout.cell - 1, y + stripe - 1), fill=colour)
        box = (x, y + stripe, x + layout.cell - 1, y + stripe + layout.cell - 1)
        if cell.image is None:
            _placeholder(sheet, box, cell.placeholder or cell.status.upper(), cell.placeholder_detail, colour, layout)
        else:
            thumb = fill(cell.image.convert("RGB"), layout.cell)
            ox = x + (layout.cell - thumb.width) // 2
            oy = y + stripe + (layout.cell - thumb.height) // 2
            sheet.paste(thumb, (ox, oy))
            if cell.flags:
                draw.rectangle((ox - 2, oy - 2, ox + thumb.width + 1, oy + thumb.height + 1), outline=FLAG_COLOUR, width=3)
        ty = y + stripe + layout.cell + 4
        for line in cell.lines:
            draw.text((x, ty), ellipsise(line, fnt, layout.cell), fill=TEXT, font=fnt)
            ty += line_h
        if cell.flags:
            draw.text((x, ty), ellipsise("flag: " + ", ".join(cell.flags), fnt, layout.cell), fill=FLAG_COLOUR, font=fnt)
    return sheet


def paginate(source: Cell, variants: list[Cell], layout: SheetLayout) -> list[list[Cell]]:
    """Pages of cells, each starting with the source cell."""
    per_page = layout.columns * layout.max_grid_rows - 1
    if not variants:
        return [[source]]
    return [[source, *variants[i:i + per_page]] for i in range(0, len(variants), per_page)]


def write_sheets(title: str, source: Cell, variants: list[Cell], layout: SheetLayout,
                 out_dir: Path, stem: str) -> list[Path]:
    """Render and save the pages of one group; returns their paths."""
    pages = paginate(source, variants, layout)
    columns = [min(layout.columns, max(1, len(cells))) for cells in pages]
    placed = [[(i % n, i // n, c) for i, c in enumerate(cells)] for cells, n in zip(pages, columns,
                                                                                   strict=True)]
    return _save_pages(title, placed, columns, layout, out_dir, stem)


def _save_pages(title: str, pages: list[list[tuple[int, int, Cell]]], columns: list[int],
                layout: SheetLayout, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    ext = "png" if layout.format == "png" else "jpg"
    paths = []
    for number, (placed, n) in enumerate(zip(pages, columns, strict=True), start=1):
        page_title = title if len(pages) == 1 else f"{title} (page {number} of {len(pages)})"
        image = _render(page_title, placed, n, layout)
        path = out_dir / (f"{stem}.{ext}" if len(pages) == 1 else f"{stem}-p{number}.{ext}")
        if layout.format == "png":
            image.save(path, "PNG", compress_level=1)  # fast; sheets are for viewing, not archiving
        else:
            image.save(path, "JPEG", quality=88)
        paths.append(path)
    return paths


def layout_strips(strips: list[list[Cell]], layout: SheetLayout
                  ) -> tuple[list[list[tuple[int, int, Cell]]], list[list[int]]]:
    """Strips (each [source, step 1, ...]) placed on pages: each strip starts a grid row and
    wraps at ``columns``; a strip longer than a page goes on, its source first again.
    Returns (pages of (column, grid row, cell), per strip the page of each of its cells)."""
    pages: list[list[tuple[int, int, Cell]]] = [[]]
    row = 0
    page_of: list[list[int]] = []
    for strip in strips:
        source, steps = strip[0], strip[1:]
        chunk = layout.columns * layout.max_grid_rows - 1
        pieces = [steps[i:i + chunk] for i in range(0, len(steps), chunk)] or [[]]
        where: list[int] = []
        for piece in pieces:
            cells = [source, *piece]
            need = -(-len(cells) // layout.columns)
            if row and row + need > layout.max_grid_rows:
                pages.append([])
                row = 0
            pages[-1] += [(i % layout.columns, row + i // layout.columns, c)
                          for i, c in enumerate(cells)]
            where += [len(pages) - 1] * len(piece)
            row += need
        page_of.append(where)
    return pages, page_of


def write_strips(title: str, strips: list[list[Cell]], layout: SheetLayout, out_dir: Path,
                 stem: str) -> tuple[list[Path], list[list[int]]]:
    """Render and save one group's strips (``layout_strips``); (page paths, per strip the page
    index of each step)."""
    pages, page_of = layout_strips(strips, layout)
    widest = [max(col for col, _, _ in placed) + 1 for placed in pages]
    return _save_pages(title, pages, widest, layout, out_dir, stem), page_of
