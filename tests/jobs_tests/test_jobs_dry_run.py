"""`job run --dry-run`: the date's plan (rows, cache hits, rows to generate, estimated cost)
without loading a model, starting Ray or writing a run folder; a real run then has exactly
the predicted hits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from job_catalog_helpers import write_red_job
from PIL import Image
from pipeline_helpers import ray_cluster_fixture

from jobs import cli
from jobs.dry_run import dry_run_job
from jobs.history import job_history
from jobs.runner import run_job
from jobs.spec import load_job_spec

D1, D2 = "2026-11-26", "2026-11-27"


def write_catalog(folder: Path, products: int) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(products):
        Image.new("RGB", (32, 32), (40 * i, 120, 200 - 40 * i)).save(
            folder / "images" / f"p{i:02d}.png")
        rows.append({"product_id": f"p{i:02d}", "image": f"images/p{i:02d}.png",
                     "product": "box"})
    pd.DataFrame(rows).to_csv(folder / "catalog.csv", index=False)


def make_job(tmp_path: Path, products: int = 2) -> Path:
    write_catalog(tmp_path / "catalog", products)
    return write_red_job(tmp_path, "dry")


def test_a_dry_run_plans_without_a_model_ray_or_run_folder(tmp_path: Path, monkeypatch,
                                                           capsys) -> None:
    import ray

    import kontext_core

    def no_load(*args, **kwargs):
        raise AssertionError("a dry run loaded a model")

    monkeypatch.setattr(kontext_core.KontextEditor, "load", no_load)
    spec = make_job(tmp_path)
    assert not ray.is_initialized()
    assert cli.main(["job", "run", str(spec), "--date", D2, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"job dry {D2}: dry run (nothing was run or written)" in out
    assert "2 rows: 0 cache hits, 2 to generate, 0 failed" in out
    assert "estimate: none" in out
    assert not ray.is_initialized()
    assert not (tmp_path / "out").exists()


def test_a_dry_run_config_error_is_exit_2(tmp_path: Path, capsys) -> None:
    spec = make_job(tmp_path)
    (tmp_path / "variants.yaml").write_text("variants: []\n")
    assert cli.main(["job", "run", str(spec), "--date", D2, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "kontext-batch job run:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


ray_cluster = ray_cluster_fixture()


def test_the_plan_matches_the_real_run_and_prices_by_the_jobs_history(
        tmp_path: Path, ray_cluster, capsys) -> None:
    spec = load_job_spec(make_job(tmp_path, products=2))
    first = run_job(spec, D1, progress=False, reports=False, retry_backoff_s=0.05)
    assert (first.status, first.counts["done"]) == ("complete", 2)
    write_catalog(tmp_path / "catalog", 3)  # one new product: one row to generate

    planned = dry_run_job(spec, D2)
    plan = planned.plan
    assert (plan.rows, plan.cache_hits, plan.to_generate, plan.failed) == (3, 2, 1, 0)
    assert not spec.run_dir(D2).exists()
    _, totals = job_history(spec)
    per_image = totals["cost"]["total"] / totals["rows"]["done"]
    assert plan.basis is not None and plan.basis.images == 2 and plan.basis.runs == 1
    assert plan.estimated_cost == pytest.approx(per_image)
    assert "for 1 image(s) at" in planned.report()

    second = run_job(spec, D2, progress=False, reports=False, retry_backoff_s=0.05)
    assert (second.counts["cache-hit"], second.counts["done"]) == (2, 1)

    assert cli.main(["job", "run", str(spec.path), "--date", D2, "--dry-run"]) == 0
    assert "already finished (complete): a trigger would run nothing" in capsys.readouterr().out


def test_the_report_compares_the_estimate_with_the_budget_cap(tmp_path: Path) -> None:
    from jobs.dry_run import JobDryRun
    from pipeline.dry_run import CostBasis, DryRun

    plan = DryRun(run_id="dry-2026-11-27", resumes=False, rows=10, cache_hits=6, done_before=0,
                  failed=0, deferred=0, to_generate=4, same_key=0,
                  basis=CostBasis(per_image=0.2, currency="USD", runs=3, images=30))
    over = JobDryRun("dry", D2, tmp_path, plan=plan, budget=(0.5, "USD")).report()
    assert "estimate: ~$0.8000 for 4 image(s) at $0.2000 per image (30 image(s) generated " \
           "in 3 earlier run(s))" in over
    assert "budget:   cap $0.5000 (the estimate is above it: the run would stop at the cap, " \
           "exit 3)" in over
    within = JobDryRun("dry", D2, tmp_path, plan=plan, budget=(1.0, "USD")).report()
    assert "cap $1.00 (the estimate is within it)" in within
