"""kontext-batch redo: which images are redone, with which seeds or instruction, what is refused
(no model: the follow-up run is a stand-in that records its RunConfig)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from review_helpers import session, synthetic

from jobs.cli import main
from pipeline.redo import RedoError, plan_redo, redo
from pipeline.review.runs import run_target


@pytest.fixture
def run(tmp_path):
    return synthetic(tmp_path / "out", failed=(), cache_hits=())


def test_rejected_and_redo_images_get_new_seeds_others_are_left(run):
    s = session(run)
    s.decide("reject", row_ids=["p0-v1"])
    s.decide("redo", row_ids=["p1-v2"])
    s.decide("approve", row_ids=["p2-v0"])
    plan = plan_redo(run_target(run.run_dir), seeds=2)
    assert [(r["row_id"], r["seed"]) for r in plan.rows] == [
        ("p0-v1~r1", 1002), ("p0-v1~r2", 1003), ("p1-v2~r1", 1007), ("p1-v2~r2", 1008)]
    first = plan.rows[0]
    assert (first["product_id"], first["variant"], first["meta_redo_of"]) == ("P000", "bg-1", "p0-v1")
    assert first["instruction"] == "put the product on background 1"
    assert Path(first["image"]).is_absolute() and Path(first["image"]).is_file()
    assert (plan.slots, plan.waiting, plan.approved) == (2, 9, 1)


def test_instruction_from_note_uses_the_reviewers_correction(run):
    session(run).decide("reject", row_ids=["p0-v1"], note="put the product on a white marble table")
    plan = plan_redo(run_target(run.run_dir), instruction_from="note")
    assert [(r["instruction"], r["seed"]) for r in plan.rows] == [
        ("put the product on a white marble table", 1001)]  # the original seed: only the text changed


def test_instruction_from_note_refuses_rejections_without_a_note(run, capsys):
    session(run).decide("reject", row_ids=["p0-v1", "p0-v2"])
    with pytest.raises(RedoError, match=r"2 rejected image\(s\) have no note .*p0-v1, p0-v2"):
        plan_redo(run_target(run.run_dir), instruction_from="note")
    assert main(["redo", str(run.run_dir), "--instruction-from", "note"]) == 2
    err = capsys.readouterr().err
    assert "kontext-batch redo: error:" in err and "Traceback" not in err
    assert not (run.run_dir / "redo").exists()


def test_nothing_to_redo_runs_nothing(run, capsys):
    session(run).decide("approve", filters={"product": "P000"})
    assert main(["redo", str(run.run_dir)]) == 0
    assert "nothing to redo in run run-synthetic" in capsys.readouterr().out
    assert not (run.run_dir / "redo").exists()


def test_the_follow_up_run_uses_the_runs_out_and_image_folder(run):
    session(run).decide("reject", row_ids=["p0-v1"])
    seen = {}

    def runner(config):
        seen["config"] = config
        return SimpleNamespace(run_dir=run.out_root / "runs" / "redo-run", exit_code=0)

    plan, _ = redo(run_target(run.run_dir), runner=runner)
    config = seen["config"]
    assert Path(config.out) == run.out_root and config.store == str(run.out_root / "store")
    assert config.image_roots == [str(run.out_root / "sources")]
    table = pq.read_table(config.manifest).to_pylist()
    assert [r["row_id"] for r in table] == ["p0-v1~r1"] and Path(config.manifest).parent == run.run_dir / "redo"
    assert (run.run_dir / "redo.json").is_file()


def test_a_second_redo_waits_for_the_first_candidates_review(run):
    """Once a candidate exists (linked, not yet decided), its slot is not redone again."""
    session(run).decide("reject", row_ids=["p0-v1"])
    follow = synthetic(run.out_root, run_id="redo-1", products=1, variants=2, failed=(), cache_hits=(),
                       instructions={0: "a redo", 1: "another"})  # keys of their own
    table = pq.read_table(follow.run_dir / "results.parquet")
    ids = ["p0-v1~r1", "other"]
    table = table.set_column(0, "row_id", [ids]).append_column("meta_redo_of", [["p0-v1", None]])
    pq.write_table(table, follow.run_dir / "results.parquet")
    from pipeline.redo import link

    link(run_target(run.run_dir), follow.run_dir, follow.run_dir / "m.parquet", 1)
    assert plan_redo(run_target(run.run_dir)).rows == []  # the candidate waits
    session(run).decide("reject", row_ids=["p0-v1~r1"])
    rows = plan_redo(run_target(run.run_dir)).rows
    assert [(r["row_id"], r["seed"]) for r in rows] == [("p0-v1~r2", 1002)]
