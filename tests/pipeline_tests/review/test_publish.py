"""kontext-batch publish: approved images as <product_id>/<variant>[-<k>].<ext>, feed.csv,
published.json; idempotent; clashes refused unless --overwrite; unsafe names and read-only
targets refused with nothing written; recorded in the run's ledger."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from review_helpers import session, set_results, synthetic

from jobs.cli import main
from pipeline.ledger import read_ledger
from pipeline.publish import PublishError, Target, publish
from pipeline.review.runs import run_target


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def publish_records(run) -> list[dict]:
    return [r for r in read_ledger(run.run_dir / "ledger.jsonl") if r["type"] == "publish"]


def test_publishes_approved_images_with_feed_and_record(tmp_path, capsys):
    run = synthetic(tmp_path / "out")
    s = session(run, reviewer="alice")
    s.decide("approve", filters={"product": "P000"})  # p0-v0, p0-v2 (cache hit), p0-v3
    s.decide("reject", row_ids=["p0-v3"])
    s.decide("approve", row_ids=["p2-v1"])
    to = tmp_path / "shop"
    assert main(["publish", str(run.run_dir), "--to", str(to)]) == 0
    assert "3 new" in capsys.readouterr().out
    files = files_under(to)
    assert sorted(files) == ["P000/bg-0.png", "P000/bg-2.png", "P002/bg-1.png", "feed.csv", "published.json"]
    assert files["P000/bg-0.png"] == Path(run.rows[0]["output_uri"]).read_bytes()
    feed = list(csv.DictReader(files["feed.csv"].decode().splitlines()))
    assert feed == [
        {"Handle": "P000", "Image Src": "P000/bg-0.png", "Image Position": "1", "Image Alt Text": "P000 (bg-0)"},
        {"Handle": "P000", "Image Src": "P000/bg-2.png", "Image Position": "2", "Image Alt Text": "P000 (bg-2)"},
        {"Handle": "P002", "Image Src": "P002/bg-1.png", "Image Position": "1", "Image Alt Text": "P002 (bg-1)"},
    ]
    images = json.loads(files["published.json"])["images"]
    first = images[0]
    assert first["path"] == "P000/bg-0.png" and first["row_id"] == "p0-v0" and first["key"] == run.rows[0]["key"]
    assert first["sha256"] == hashlib.sha256(files["P000/bg-0.png"]).hexdigest()
    assert (first["source"], first["instruction"], first["seed"]) == ("product-0.png", run.rows[0]["instruction"], 1000)
    assert (first["decision"], first["reviewer"]) == ("approve", "alice")
    [record] = publish_records(run)
    assert (record["target"], record["written"], record["images"]) == (str(to), 3, 3)


def test_publishing_again_writes_nothing_new(tmp_path, capsys):
    run = synthetic(tmp_path / "out")
    session(run).decide("approve", filters={"variant": "bg-0"})
    to = tmp_path / "shop"
    assert main(["publish", str(run.run_dir), "--to", str(to)]) == 0
    before = {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in to.rglob("*")}
    ledger = (run.run_dir / "ledger.jsonl").read_bytes()
    capsys.readouterr()
    assert main(["publish", str(run.run_dir), "--to", str(to)]) == 0
    assert "nothing new (3 images already there)" in capsys.readouterr().out
    assert {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in to.rglob("*")} == before
    assert (run.run_dir / "ledger.jsonl").read_bytes() == ledger


def test_all_done_publishes_undecided_images_but_never_rejected_ones(tmp_path):
    run = synthetic(tmp_path / "out")
    session(run).decide("reject", row_ids=["p1-v1"])
    session(run).decide("redo", row_ids=["p1-v2"])
    result = publish(run_target(run.run_dir), str(tmp_path / "shop"), all_done=True)
    assert len(result.written) == 9  # 12 rows - 1 failed - 1 rejected - 1 redo
    assert "P001/bg-1.png" not in result.written and "P001/bg-2.png" not in result.written
    assert publish(run_target(run.run_dir), str(tmp_path / "empty")).written == []  # none approved


def test_second_and_later_rows_of_a_variant_get_a_number(tmp_path):
    run = synthetic(tmp_path / "out", failed=(), cache_hits=())
    set_results(run.run_dir, "variant", {1: "bg-0", 2: "bg-0"})  # P000 has bg-0 three times
    session(run).decide("approve", row_ids=["p0-v0", "p0-v2"])
    result = publish(run_target(run.run_dir), str(tmp_path / "shop"))
    assert result.written == ["P000/bg-0.png", "P000/bg-0-3.png"]  # named over every row of the pair


def test_a_different_file_at_a_target_path_is_refused_unless_overwrite(tmp_path, capsys):
    run = synthetic(tmp_path / "out")
    session(run).decide("approve", row_ids=["p0-v0", "p1-v0"])
    to = tmp_path / "shop"
    (to / "P001").mkdir(parents=True)
    (to / "P001" / "bg-0.png").write_bytes(b"someone else's picture")
    assert main(["publish", str(run.run_dir), "--to", str(to)]) == 2
    err = capsys.readouterr().err
    assert "nothing published: 1 target path(s) already hold a different file" in err
    assert f"{to}/P001/bg-0.png" in err and "--overwrite" in err and "Traceback" not in err
    assert sorted(files_under(to)) == ["P001/bg-0.png"] and not publish_records(run)
    assert main(["publish", str(run.run_dir), "--to", str(to), "--overwrite"]) == 0
    assert (to / "P001" / "bg-0.png").read_bytes() == Path(run.rows[4]["output_uri"]).read_bytes()
    assert publish_records(run)[0]["overwritten"] == 1


@pytest.mark.parametrize("column,value", [
    ("product_id", "../escape"), ("product_id", "/etc"), ("product_id", "a\x00b"),
    ("variant", "../../x"), ("variant", "sub/dir"), ("product_id", ".."), ("variant", None),
    ("product_id", "tab\there"),
])
def test_names_that_would_escape_the_target_are_refused_before_writing(tmp_path, capsys, column, value):
    run = synthetic(tmp_path / "out")
    set_results(run.run_dir, column, {0: value})
    session(run).decide("approve", row_ids=["p0-v0", "p0-v2"])
    to = tmp_path / "area" / "shop"
    to.mkdir(parents=True)
    assert main(["publish", str(run.run_dir), "--to", str(to)]) == 2
    err = capsys.readouterr().err
    assert "row p0-v0:" in err and "cannot be named safely" in err and "Traceback" not in err
    assert files_under(tmp_path / "area") == {} and not (tmp_path / "etc").exists()
    assert not publish_records(run)


def test_target_paths_stay_under_the_target():
    target = Target("/tmp/shop-h8")
    with pytest.raises(PublishError, match="outside"):
        target.path("../x.png")
    assert target.path("P1/a.png") == "/tmp/shop-h8/P1/a.png"


@contextlib.contextmanager
def read_only(folder: Path):
    """A folder nobody may create files in (root ignores mode bits: make it immutable)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only folder here (chattr +i refused)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_target_is_refused_with_the_reason(tmp_path, capsys):
    run = synthetic(tmp_path / "out")
    session(run).decide("approve", row_ids=["p0-v0"])
    to = tmp_path / "shop"
    to.mkdir()
    with read_only(to):
        assert main(["publish", str(run.run_dir), "--to", str(to)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {to}/P000/bg-0.png" in err and "writable --to" in err
    assert "Traceback" not in err and files_under(to) == {} and not publish_records(run)


def test_publishes_through_a_pyarrow_filesystem_uri(tmp_path):
    """Any pyarrow filesystem, as the store: here a file:// URI through pafs."""
    run = synthetic(tmp_path / "out")
    session(run).decide("approve", row_ids=["p2-v3"])
    result = publish(run_target(run.run_dir), f"file://{tmp_path}/remote", base_url="https://cdn.example/cat/")
    assert result.written == ["P002/bg-3.png"]
    fs = pafs.LocalFileSystem()
    with fs.open_input_stream(f"{tmp_path}/remote/feed.csv") as f:
        assert b"https://cdn.example/cat/P002/bg-3.png" in f.read()


def test_publish_errors_for_a_missing_run_or_job(tmp_path, capsys):
    assert main(["publish", str(tmp_path / "nope"), "--to", str(tmp_path / "shop")]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["publish", "nightly", "--date", "2026-13-01", "--to", str(tmp_path / "shop")]) == 2
    assert "not a calendar date" in capsys.readouterr().err
    assert not (tmp_path / "shop").exists()
