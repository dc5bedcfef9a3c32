"""`kontext-batch run --max-review-rows N` reaches the review page the run builds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pipeline_helpers import make_manifest, run_once

from pipeline import cli


def test_run_flag_is_parsed_and_checked(capsys) -> None:
    args = cli.build_parser().parse_args(["run", "m.parquet", "--max-review-rows", "2"])
    assert args.max_review_rows == 2
    assert cli.build_parser().parse_args(["run", "m.parquet"]).max_review_rows is None
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["run", "m.parquet", "--max-review-rows", "-1"])
    assert "'-1' is not a row count" in capsys.readouterr().err


def test_run_review_page_shows_at_most_the_cap_and_counts_the_rest(tmp_path: Path) -> None:

    manifest = make_manifest(tmp_path / "m", products=2, variants=2)
    summary = run_once(manifest, tmp_path / "out", batch_size=4, reports=True, max_review_rows=3)
    assert summary.exit_code == 0 and summary.counts["done"] == 4
    page = Path(summary.reports["review"]).read_text()
    assert re.search(r"3 shown \+ 0 cache hits \+ 0 not run \+ 1 left out = 4 rows", page), page[-2000:]
    assert len(list((summary.run_dir / "review" / "thumbs").iterdir())) == 3
