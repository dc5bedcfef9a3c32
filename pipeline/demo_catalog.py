"""The shipped demo catalog (manifests/examples/demo): synthetic product photos from
kontext_core.synthetic, a catalog.csv and the manifest `make run` edits by default.

It lives in pipeline, which may use both kontext_core (the renderer) and the manifest format;
kontext_core itself knows nothing of manifests. Regenerate with
`python -m pipeline.demo_catalog manifests/examples/demo` (a test checks the committed files).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from kontext_core.synthetic import DEMO_PRODUCTS, DEMO_SIZE, demo_examples, demo_photo, image_path

MANIFEST_SCHEMA = pa.schema([
    ("image", pa.string()), ("instruction", pa.string()), ("seed", pa.int64()),
    ("row_id", pa.string()), ("product_id", pa.string()), ("variant", pa.string()),
])


def write_demo_catalog(directory: str | Path, size: int = DEMO_SIZE) -> Path:
    """Write images/*.png, catalog.csv and manifest.parquet into ``directory``; return the manifest."""
    directory = Path(directory)
    (directory / "images").mkdir(parents=True, exist_ok=True)
    with open(directory / "catalog.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["product_id", "image", "product", "colour"])
        for product_id, scene in DEMO_PRODUCTS.items():
            Image.fromarray(demo_photo(product_id, size)).save(directory / image_path(product_id), optimize=True)
            writer.writerow([product_id, image_path(product_id), scene.product, scene.product_colour])
    manifest = directory / "manifest.parquet"
    pq.write_table(pa.Table.from_pylist([row for row, _ in demo_examples(size)], schema=MANIFEST_SCHEMA), manifest)
    return manifest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m pipeline.demo_catalog DIR")
    print(write_demo_catalog(sys.argv[1]))
