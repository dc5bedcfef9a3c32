"""Chained edits (#21): publish takes a chain's final step by default (the earlier steps are
working images), every step with all_steps; earlier steps do not shift the final's name."""

from __future__ import annotations

from pipeline.publish import plan
from pipeline.review.decisions import Decision
from pipeline.review.runs import ReviewRow


def _row(i: int, row_id: str, image: str, variant: str = "bg") -> ReviewRow:
    return ReviewRow(index=i, row_id=row_id, key=f"k{i}", status="done",
                     output_uri=f"/store/k{i}.png", product_id="p0", variant=variant,
                     instruction=f"step {i}", seed=i, image=image, reason=None)


CHAIN = [_row(0, "p0-s1", "images/p0.png"), _row(1, "p0-s2", "row:p0-s1"),
         _row(2, "p0-s3", "row:p0-s2"), _row(3, "p1", "images/p1.png", variant="red")]


def test_all_done_publishes_only_the_final_step_under_the_plain_name():
    planned = plan(CHAIN, {}, all_done=True)
    assert [(p.row.row_id, p.rel) for p in planned] == [("p0-s3", "p0/bg.png"),
                                                        ("p1", "p0/red.png")]


def test_all_steps_publishes_every_step_numbered():
    planned = plan(CHAIN, {}, all_done=True, all_steps=True)
    assert [(p.row.row_id, p.rel) for p in planned] == [
        ("p0-s1", "p0/bg.png"), ("p0-s2", "p0/bg-2.png"), ("p0-s3", "p0/bg-3.png"),
        ("p1", "p0/red.png")]


def test_an_approved_earlier_step_is_not_published_by_default():
    approved = {"k1": Decision(key="k1", decision="approve", reviewer="ann", ts=1.0)}
    assert plan(CHAIN, approved, all_done=False) == []
    assert [p.row.row_id for p in plan(CHAIN, approved, all_done=False, all_steps=True)] == \
        ["p0-s2"]
