"""Contact sheets: per product (or per source image), the source then every variant, captioned.

Each cell is an image scaled to fill its square box (small model outputs are enlarged to the
source's displayed size; images.fill), with a coloured status stripe (green done, blue cache hit, red failed,
grey not run) and caption lines (variant or instruction, seed and status, cost, flags). Rows
without an image get a labelled placeholder. Long groups continue on further pages, each page
starting again with the source so it can be reviewed on its own.
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
    fnt = font(layout.font_size)
    line_h = layout.font_size + 4
    caption_lines = max((len(c.lines) + (1 if c.flags else 0) for c in cells), default=1)
    pad = 8
    stripe = 5
    cell_w = layout.cell + pad
    cell_h = stripe + layout.cell + 4 + caption_lines * line_h + pad
    columns = min(layout.columns, max(1, len(cells)))
    grid_rows = -(-len(cells) // columns)
    header_h = layout.font_size + 18
    sheet = Image.new("RGB", (pad + columns * cell_w, header_h + grid_rows * cell_h + pad), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad), ellipsise(title, font(layout.font_size + 3), sheet.width - 2 * pad), fill=TEXT,
              font=font(layout.font_size + 3))
    for i, cell in enumerate(cells):
        col, row = i % columns, i // columns
        x = pad + col * cell_w
        y = header_h + row * cell_h
        colour = STATUS_COLOURS.get(cell.status, STATUS_COLOURS["not-run"])
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
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = paginate(source, variants, layout)
    ext = "png" if layout.format == "png" else "jpg"
    paths = []
    for number, cells in enumerate(pages, start=1):
        page_title = title if len(pages) == 1 else f"{title} (page {number} of {len(pages)})"
        image = render_page(page_title, cells, layout)
        path = out_dir / (f"{stem}.{ext}" if len(pages) == 1 else f"{stem}-p{number}.{ext}")
        if layout.format == "png":
            image.save(path, "PNG", compress_level=1)  # fast; sheets are for viewing, not archiving
        else:
            image.save(path, "JPEG", quality=88)
        paths.append(path)
    return paths
