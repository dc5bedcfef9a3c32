"""A Parquet manifest with an intact footer and a damaged data page (read-time damage that
opening the file does not show). Shared by the manifest tests and the bad-input suite."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def damaged_parquet(path: Path, rows: int = 200) -> Path:
    """A manifest whose footer is intact and whose instruction column's page is not."""
    buf = io.BytesIO()
    pq.write_table(pa.table({"image": ["images/a.png"] * rows,
                             "instruction": [f"make it blue {i}" for i in range(rows)],
                             "seed": list(range(rows))}), buf)
    data = bytearray(buf.getvalue())
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(0).column(1)
    start = chunk.data_page_offset + 8
    for i in range(start, start + 64):
        data[i] ^= 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    pq.ParquetFile(path)  # the footer still reads
    return path
