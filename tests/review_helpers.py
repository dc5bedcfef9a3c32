"""Shared set-up for the review and publish tests: a synthetic run, HTTP calls to the server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from synthetic_runs import make_synthetic_run

from pipeline.review.runs import run_target
from pipeline.review.service import ReviewSession

SCRIPT = "<script>document.title='pwned'</script>"


def synthetic(out: Path, **kw: Any):
    """3 products x 4 variants; row 1 failed, row 2 a cache hit unless told otherwise."""
    kw.setdefault("failed", (1,))
    kw.setdefault("cache_hits", (2,))
    return make_synthetic_run(out, **kw)


def session(run, reviewer: str = "alice") -> ReviewSession:
    return ReviewSession(run_target(run.run_dir), reviewer)


def set_results(run_dir: Path, column: str, values: dict[int, Any]) -> None:
    """Overwrite some rows' values of one results.parquet column (row index -> value)."""
    path = run_dir / "results.parquet"
    table = pq.read_table(path)
    col = table.column(column).to_pylist()
    for i, v in values.items():
        col[i] = v
    table = table.set_column(table.schema.get_field_index(column), column, pa.array(col, pa.string()))
    pq.write_table(table, path)


def call(port: int, path: str, *, token: str | None = None, body: Any = None,
         headers: dict[str, str] | None = None, method: str | None = None) -> tuple[int, Any, dict]:
    """(status, parsed JSON or bytes, headers) of one request to the review server."""
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["X-Review-Token"] = token
    data = None
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=hdrs,
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw, got = resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        status, raw, got = exc.code, exc.read(), dict(exc.headers)
    if got.get("Content-Type", "").startswith("application/json"):
        return status, json.loads(raw), got
    return status, raw, got


def decision_lines(out: Path) -> list[dict]:
    path = out / "decisions.jsonl"
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
