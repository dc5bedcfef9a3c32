"""A budget cap below one model load's cost is named before the run: the cap is
checked before each batch, and a load is paid for before any row finishes, so such a cap is
always overshot. Money in jobs/ is printed as the report prints it ($0.0000758)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ledger_records import actor_load, run_start, write_ledger
from PIL import Image

from jobs import cli
from jobs.budget_notice import budget_load_warning, budget_stop_line
from jobs.history import HistoryRow, render_history
from jobs.spec import load_job_spec

SPEC = """\
name: nightly
manifest: m.parquet
model: kontext-tiny
output: out
budget: {{amount: {amount}, currency: USD}}
ray: {{device: {device}}}
"""


def write_spec(folder: Path, amount: float, device: str = "cpu") -> Path:
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    pq.write_table(pa.table({"image": ["a.png"], "instruction": ["make it red"],
                             "seed": pa.array([0], pa.int64())}), folder / "m.parquet")
    path = folder / "nightly.yaml"
    path.write_text(SPEC.format(amount=amount, device=device))
    return path


def earlier_run(folder: Path, date: str, loads: list[tuple[str, float]]) -> None:
    """A run folder of the job whose ledger holds these (device type, seconds) loads."""
    run_dir = folder / "out" / "runs" / f"nightly-{date}"
    run_dir.mkdir(parents=True)
    records = [run_start(1.0, run_id=run_dir.name)]
    records += [actor_load(2.0, f"a{i}", 100.0, 100.0 + seconds, pid=None, node="n", device_type=kind,
                           run_id=run_dir.name) for i, (kind, seconds) in enumerate(loads)]
    write_ledger(run_dir / "ledger.jsonl", records)


def test_the_longest_recorded_load_of_the_latest_run_prices_the_warning(tmp_path):
    spec_path = write_spec(tmp_path, 0.01, device="cuda")
    earlier_run(tmp_path, "2026-11-25", [("H200", 90.0)])
    earlier_run(tmp_path, "2026-11-26", [("H100", 12.0), ("H100", 20.0)])
    warning = budget_load_warning(load_job_spec(spec_path))
    # 20 s at 2.99 USD/h = 0.016611 USD: the latest run's longest load, not the older 90 s one
    assert warning == (
        f"warning: the budget cap $0.0100 (budget.amount in {spec_path}) is below the cost of "
        "one model load, $0.0166 (20.0 s on H100 at $2.99/h; the longest of 2 load(s) "
        "recorded in run nightly-2026-11-26). The cap is checked before each batch, and each "
        "actor's load is paid for before any row finishes, so the run will spend more than "
        "its cap. Fix: raise budget.amount to at least $0.0166 per actor, or remove the "
        "budget section if the job should always run."
    )


def test_without_earlier_loads_the_estimate_is_stated(tmp_path):
    spec = load_job_spec(write_spec(tmp_path, 0.0001))
    warning = budget_load_warning(spec)
    # 10 s at 0.05 USD/h = 0.000139 USD
    assert "below the cost of one model load, $0.000139 (10.0 s on CPU at $0.0500/h; an " \
           "estimate for model kontext-tiny on a CPU: no earlier run of job nightly recorded " \
           "a load)" in warning


def test_a_cap_that_covers_a_load_says_nothing(tmp_path):
    assert budget_load_warning(load_job_spec(write_spec(tmp_path, 0.5))) is None
    earlier_run(tmp_path, "2026-11-26", [("CPU", 5.0)])
    assert budget_load_warning(load_job_spec(tmp_path / "nightly.yaml")) is None


def test_job_validate_warns_on_stderr_and_still_passes(tmp_path, capsys):
    spec_path = write_spec(tmp_path, 0.0001)
    assert cli.main(["job", "validate", str(spec_path)]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("kontext-batch job validate: warning: the budget cap "
                                   "$0.000100 (budget.amount in ")
    assert "Fix: raise budget.amount to at least $0.000139 per actor" in captured.err
    assert "ok (job nightly" in captured.out


def test_job_run_warns_before_any_work(tmp_path, capsys, monkeypatch):
    import jobs.runner

    def no_run(*args, **kwargs):
        raise jobs.runner.JobError("stopped by the test before any work")

    monkeypatch.setattr(jobs.runner, "run_job", no_run)
    spec_path = write_spec(tmp_path, 0.0001)
    assert cli.main(["job", "run", str(spec_path), "--date", "2026-11-27"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("kontext-batch job run: warning: the budget cap $0.000100 ")
    assert err[1] == "kontext-batch job run: stopped by the test before any work"


def test_budget_stop_line_prints_money_as_the_report_does():
    stop = {"spent": 7.5773e-05, "cap": 5e-05, "currency": "USD", "rows_not_dispatched": 3}
    assert budget_stop_line(stop) == (
        "  budget:   stopped at the cap: spent $0.0000758 of $0.0000500; 3 row(s) not run "
        "(reason 'budget cap reached'); exit code 3")


@pytest.mark.parametrize(("cost", "shown"), [(7.5773e-05, "$0.0000758"), (1234.5, "$1,234.50"),
                                             (None, "-")])
def test_history_prints_money_as_the_report_does(tmp_path, cost, shown):
    spec = load_job_spec(write_spec(tmp_path, 0.5), check_files=False)
    row = HistoryRow("2026-11-27", "nightly-2026-11-27", tmp_path, "complete", images=2,
                     cost=cost, currency="USD")
    table = render_history(spec, [row], None).splitlines()
    assert table[2].split()[-1] == shown
