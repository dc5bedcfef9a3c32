"""Jobs without Ray: spec validation (file, line, key), cron, schedules, retention, budget meter."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import textwrap
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from budget_helpers import Clock
from ledger_records import record, write_ledger

from jobs import cli
from jobs.budget import LedgerBudget
from jobs.cron import CronError, parse_cron
from jobs.lock import RunLock
from jobs.retention import apply_retention, expired_runs, job_run_dirs
from jobs.schedule import crontab_line, systemd_units
from jobs.spec import Retention, SpecError, find_job_spec, load_job_spec
from pipeline.reports.pricing import load_pricing

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "jobs" / "examples" / "demo-nightly.yaml"


def write_spec(folder: Path, body: str, name: str = "job.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "m.parquet").write_bytes(b"not read by validation")
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip("\n"))
    return path


GOOD = """
name: nightly
manifest: m.parquet
model: kontext-tiny
output: out
budget:
  amount: 5
  currency: USD
retention:
  keep_runs: 3
schedule:
  cron: "30 1 * * 1-5"
  timezone: Europe/London
"""


def problems_of(path: Path, **kw) -> list:
    with pytest.raises(SpecError) as info:
        load_job_spec(path, **kw)
    return info.value.problems


def line_of(path: Path, needle: str) -> int:
    lines = path.read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if needle in line)


# ----------------------------------------------------------------------------- specs


def test_good_spec_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    spec = load_job_spec(write_spec(tmp_path / "specs", GOOD))
    assert spec.name == "nightly" and spec.model == "kontext-tiny"
    assert spec.manifest == tmp_path / "specs" / "m.parquet"
    assert spec.output == tmp_path / "specs" / "out"
    assert spec.run_dir("2026-11-27") == tmp_path / "specs/out/runs/nightly-2026-11-27"
    assert spec.budget.amount == 5.0 and spec.budget.currency == "USD"
    assert spec.retention == Retention(keep_runs=3, keep_days=None)
    assert spec.schedule.timezone == "Europe/London" and spec.schedule.cron.hours == (1,)
    assert spec.sampler.batch_size == 4 and spec.ray.address is None


def test_example_demo_spec_is_valid_with_model_and_files() -> None:
    spec = load_job_spec(EXAMPLE, check_files=True, check_model=True)
    assert spec.name == "demo-nightly" and spec.model == "kontext-tiny"
    assert spec.build.catalog == REPO / "manifests/examples/demo/catalog.csv"
    assert spec.output == REPO / "runs" / "jobs"
    assert find_job_spec("demo-nightly", [EXAMPLE.parent]) == EXAMPLE


@pytest.mark.parametrize(
    "old, new, key, needle, words",
    [
        ("retention:", "retension:", "retension", "retension:", ["did you mean 'retention'"]),
        ("  amount: 5", "  amout: 5", "budget.amout", "amout:", ["did you mean 'amount'"]),
        ("  amount: 5", "  amount: -5", "budget.amount", "amount: -5",
         ["must be zero or more", "-5"]),
        ("  currency: USD", "  currency: JPY", "budget.currency", "currency: JPY",
         ["unknown currency 'JPY'", "USD, EUR, GBP"]),
        ("  currency: USD", "  currency: EUR", "budget.currency", "currency: EUR",
         ["EUR differs from the pricing file's currency USD"]),
        ('  cron: "30 1 * * 1-5"', '  cron: "30 25 * * *"', "schedule.cron", "cron:",
         ["hour field", "25 is out of range 0-23"]),
        ('  cron: "30 1 * * 1-5"', '  cron: "30 1 * *"', "schedule.cron", "cron:",
         ["4 field(s), not 5"]),
        ("  timezone: Europe/London", "  timezone: Europe/Lodnon", "schedule.timezone",
         "timezone:", ["unknown timezone 'Europe/Lodnon'", "did you mean 'Europe/London'"]),
        ("  keep_runs: 3", "  keep_runs: three", "retention.keep_runs", "keep_runs:",
         ["must be a whole number", "text 'three'"]),
        ("manifest: m.parquet", "manifest: missing.parquet", "manifest", "manifest:",
         ["file not found", "missing.parquet"]),
    ],
)
def test_each_mistake_names_file_line_and_key(tmp_path: Path, old: str, new: str, key: str,
                                              needle: str, words: list[str]) -> None:
    assert old in GOOD
    path = write_spec(tmp_path, GOOD.replace(old, new))
    problems = problems_of(path)
    assert len(problems) == 1, problems
    problem = problems[0]
    assert problem.file == str(path) and problem.key == key
    assert problem.line == line_of(path, needle)
    text = str(problem)
    assert text.startswith(f"{path}:{problem.line}: {key}: ")
    for word in words:
        assert word in text


def test_every_problem_is_reported_at_once_in_line_order(tmp_path: Path) -> None:
    path = write_spec(tmp_path, """
        name: "bad name!"
        manifest: m.parquet
        model: kontext-tiny
        output: out
        sampler:
          steps: 0
          output_format: gif
          batch_size: 2.5
        budget: {amount: -1, currency: usd}
        schedule:
          cron: "61 * * * *"
          timezone: Mars/Olympus
        ray:
          device: tpu
          adress: auto
        """)
    with pytest.raises(SpecError) as info:
        load_job_spec(path)
    keys = [(p.key, p.line) for p in info.value.problems]
    assert keys == [("name", 1), ("sampler.steps", 6), ("sampler.output_format", 7),
                    ("sampler.batch_size", 8), ("budget.amount", 9), ("schedule.cron", 11),
                    ("schedule.timezone", 12), ("ray.device", 14), ("ray.adress", 15)]
    message = str(info.value)
    assert message.startswith(f"job spec {path} has 9 problems:")
    assert "did you mean 'address'" in message and "'gif' is not one of png, jpeg, webp" in message


def test_missing_keys_duplicates_both_sources_and_yaml_syntax(tmp_path: Path) -> None:
    problems = problems_of(write_spec(tmp_path / "a", "name: x\nmodel: kontext-tiny\n"))
    assert {(p.key, p.line) for p in problems} == {("manifest", 1), ("output", 1)}
    assert any("is missing; add e.g. output:" in str(p) for p in problems)

    path = write_spec(tmp_path / "b", GOOD + "name: again\n")
    (problem,) = problems_of(path)
    assert problem.key == "name" and problem.line == line_of(path, "name: again")
    assert "given twice (first on line 1)" in problem.message

    path = write_spec(tmp_path / "c", GOOD + "build:\n  catalog: c.csv\n  variants: v.yaml\n")
    (problem,) = problems_of(path, check_files=False)
    assert problem.key == "build" and "not both" in problem.message

    path = write_spec(tmp_path / "d", "name: x\nbudget: {amount: 1\nmodel: y\n")
    (problem,) = problems_of(path)
    assert problem.key == "" and problem.line == 3 and "not valid YAML" in problem.message


def test_build_recipe_paths_and_unknown_model(tmp_path: Path) -> None:
    path = write_spec(tmp_path, """
        name: x
        build:
          catalog: nowhere.csv
          variants: v.yaml
          seeds: 0
        model: kontext-tinny
        output: out
        """)
    problems = problems_of(path, check_model=True)
    by_key = {p.key: p for p in problems}
    assert set(by_key) == {"build.catalog", "build.variants", "build.seeds", "model"}
    assert by_key["build.catalog"].line == 3 and "not found" in by_key["build.catalog"].message
    assert by_key["build.seeds"].line == 5 and "between 1 and 1000" in by_key["build.seeds"].message
    assert by_key["model"].line == 6 and "kontext-tinny" in by_key["model"].message
    assert "kontext-tiny" in by_key["model"].message  # names the shipped presets
    # Without the file checks, a spec whose files appear later (upstream exports) still loads
    # far enough to list only the model and seeds.
    problems = problems_of(path, check_files=False)
    assert {p.key for p in problems} == {"build.seeds"}


def test_pricing_file_currency_decides_the_budget_currency(tmp_path: Path) -> None:
    prices = load_pricing().to_dict()
    prices["currency"] = "EUR"
    (tmp_path / "eur.yaml").write_text(json.dumps(prices))
    path = write_spec(tmp_path, GOOD.replace("currency: USD", "currency: eur")
                      + "pricing: eur.yaml\n")
    spec = load_job_spec(path)
    assert spec.budget.currency == "EUR" and spec.pricing == tmp_path / "eur.yaml"
    prices["currency"] = "CHF"
    (tmp_path / "eur.yaml").write_text(json.dumps(prices))
    problems = problems_of(path)
    assert [p.key for p in problems] == ["pricing"]
    assert "'CHF' is not supported" in problems[0].message


def test_validate_command_exit_codes(tmp_path: Path, capsys) -> None:
    assert cli.main(["job", "validate", str(EXAMPLE)]) == 0
    assert "ok (job demo-nightly" in capsys.readouterr().out
    bad = write_spec(tmp_path, GOOD.replace("amount: 5", "amount: -5"))
    assert cli.main(["job", "validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:{line_of(bad, 'amount: -5')}: budget.amount:" in err
    assert cli.main(["job", "validate", "no-such-job", "--jobs-dir", str(tmp_path)]) == 2
    assert "no job named 'no-such-job'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- cron


def test_cron_fields_ranges_steps_names_and_macros() -> None:
    c = parse_cron("*/15 9-17/4 1,15 jan-mar MON-fri")
    assert c.minutes == (0, 15, 30, 45) and c.hours == (9, 13, 17)
    assert c.days == (1, 15) and c.months == (1, 2, 3) and c.weekdays == (1, 2, 3, 4, 5)
    assert parse_cron("0 0 * * 7").weekdays == (0,)  # 7 is Sunday too
    assert parse_cron("5/20 * * * *").minutes == (5, 25, 45)
    daily = parse_cron("@daily")
    assert (daily.text, daily.minutes, daily.hours, daily.days_restricted) == \
        ("@daily", (0,), (0,), False)


@pytest.mark.parametrize("text, words", [
    ("", "empty"), ("* * * *", "4 field(s)"), ("60 * * * *", "minute field: 60 is out"),
    ("* * 0 * *", "day of month field: 0 is out of range 1-31"),
    ("* * * 13 * ", "month field: 13"), ("* * * * 8", "day of week field: 8"),
    ("5-1 * * * *", "runs backwards"), ("*/0 * * * *", "step after '/'"),
    ("1,,2 * * * *", "empty list item"), ("* * * foo *", "'foo' is not a number"),
    ("0 0 30 2 *", "never fires"), ("@fortnightly", "unknown cron macro"),
])
def test_cron_errors_name_the_field(text: str, words: str) -> None:
    with pytest.raises(CronError) as info:
        parse_cron(text)
    assert words in str(info.value)


def test_cron_day_of_month_or_day_of_week_and_next_runs() -> None:
    tz = ZoneInfo("Europe/London")
    either = parse_cron("0 6 13 * 5")  # the 13th, and every Friday (cron's OR)
    assert either.day_matches(date(2026, 11, 13))  # a Friday the 13th
    assert either.day_matches(date(2026, 11, 20))  # a Friday
    assert either.day_matches(date(2026, 12, 13))  # a Sunday the 13th
    assert not either.day_matches(date(2026, 12, 14))
    both = parse_cron("0 6 */2 * 5")  # '*'-led day field: AND
    assert both.day_matches(date(2026, 11, 27)) and not both.day_matches(date(2026, 11, 20))

    nightly = parse_cron("0 2 * * *")
    after = datetime(2026, 3, 28, 2, 30, tzinfo=tz)
    first = nightly.next_after(after, tz)
    assert first == datetime(2026, 3, 29, 2, 0, tzinfo=tz)  # the spring-forward night
    assert nightly.next_after(datetime(2026, 11, 27, 1, 59, tzinfo=tz), tz).hour == 2
    leap = parse_cron("0 0 29 2 *").next_after(datetime(2026, 1, 1, tzinfo=tz), tz)
    assert leap.date() == date(2028, 2, 29)


def test_cron_to_systemd_on_calendar() -> None:
    assert parse_cron("0 2 * * *").on_calendar("Europe/London") == \
        ["*-*-* 02:00:00 Europe/London"]
    assert parse_cron("*/30 8-9 * * mon-fri").on_calendar() == \
        ["Mon,Tue,Wed,Thu,Fri *-*-* 08,09:00,30:00"]
    assert parse_cron("0 6 13 * 5").on_calendar("UTC") == \
        ["Fri *-*-* 06:00:00 UTC", "*-*-13 06:00:00 UTC"]


def systemd_elapses(expressions: list[str], base: str, n: int) -> list[datetime] | None:
    """The next ``n`` firings systemd computes for the union of ``expressions`` (None when
    systemd-analyze is missing or too old for --base-time)."""
    if shutil.which("systemd-analyze") is None:
        return None
    done = subprocess.run(["systemd-analyze", "calendar", f"--iterations={n}",
                           f"--base-time={base}", *expressions], capture_output=True,
                          text=True, env={**os.environ, "TZ": "UTC"}, timeout=60)
    if done.returncode != 0:
        return None
    times = re.findall(r"(?:Next elapse|Iter\. #\d+): \w{3} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC",
                       done.stdout)
    return sorted({datetime.fromisoformat(t).replace(tzinfo=ZoneInfo("UTC")) for t in times})[:n]


@pytest.mark.parametrize("text", ["0 2 * * *", "*/20 9-10 * * mon-fri", "0 6 13 * 5",
                                  "30 4 1,15 */2 *", "@weekly", "15 3 29 2 *"])
def test_on_calendar_fires_when_cron_does_according_to_systemd(text: str) -> None:
    utc = ZoneInfo("UTC")
    cron = parse_cron(text)
    expected, moment = [], datetime(2026, 11, 27, 0, 0, 30, tzinfo=utc)
    for _ in range(8):
        moment = cron.next_after(moment, utc)
        expected.append(moment)
    got = systemd_elapses(cron.on_calendar("UTC"), "2026-11-27 00:00:30 UTC", 8)
    if got is None:
        pytest.skip("systemd-analyze with --base-time is not available here")
    assert got == expected


# ----------------------------------------------------------------------------- schedules


def test_systemd_units_and_crontab_line(tmp_path: Path, capsys) -> None:
    spec = load_job_spec(write_spec(tmp_path / "specs", GOOD))
    units = systemd_units(spec, workdir=tmp_path, python="/opt/venv/bin/python")
    assert units.timer_name == "kontext-batch-job-nightly.timer"
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 01:30:00 Europe/London" in units.timer
    assert "Persistent=true" in units.timer and "Unit=kontext-batch-job-nightly.service" \
        in units.timer
    assert f"ExecStart=/opt/venv/bin/python -m jobs.cli job run {spec.path}" in units.service
    assert f"WorkingDirectory={tmp_path}" in units.service and "Type=oneshot" in units.service
    assert "KillMode=mixed" in units.service  # stop signals the driver only: it cleans up itself

    line = crontab_line(spec, workdir=tmp_path, python="/opt/venv/bin/python")
    tz_line, job_line = line.split("\n")
    assert tz_line == "CRON_TZ=Europe/London"
    assert job_line.startswith("30 1 * * 1-5 mkdir -p ")
    assert f"/opt/venv/bin/python -m jobs.cli job run {spec.path} >> " in job_line
    assert job_line.endswith(f"{spec.output}/logs/nightly.log 2>&1")

    assert cli.main(["job", "schedule", str(spec.path), "--dir", str(tmp_path / "units")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "units" / "kontext-batch-job-nightly.timer").read_text() == \
        systemd_units(spec).timer
    assert "systemctl daemon-reload" in out and "next runs (Europe/London)" in out
    assert cli.main(["job", "schedule", str(spec.path), "--crontab"]) == 0
    assert capsys.readouterr().out.startswith("CRON_TZ=Europe/London\n30 1 * * 1-5 ")

    unscheduled = write_spec(tmp_path / "u", GOOD.split("schedule:")[0])
    assert cli.main(["job", "schedule", str(unscheduled), "--print"]) == 2
    assert "has no schedule; add" in capsys.readouterr().err


# ----------------------------------------------------------------------------- retention


def make_runs(runs_dir: Path, job: str, days: list[str]) -> None:
    for day in days:
        (runs_dir / f"{job}-{day}").mkdir(parents=True)
        (runs_dir / f"{job}-{day}" / "ledger.jsonl").write_text("")


def test_retention_rules_by_count_days_and_both(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    days = ["2026-11-20", "2026-11-22", "2026-11-24", "2026-11-25", "2026-11-26",
            "2026-11-27", "2026-11-28"]
    make_runs(runs, "nightly", days)
    make_runs(runs, "nightly-eu", ["2026-01-01"])  # another job sharing the folder
    (runs / "nightly-latest").mkdir()
    found = job_run_dirs(runs, "nightly")
    assert [d.isoformat() for d, _ in found] == days
    today = date(2026, 11, 27)

    def names(rule: Retention) -> list[str]:
        return [p.name[len("nightly-"):] for p in expired_runs(found, today, rule)]

    assert names(Retention()) == []
    assert names(Retention(keep_runs=3)) == ["2026-11-20", "2026-11-22", "2026-11-24"]
    assert names(Retention(keep_days=3)) == ["2026-11-20", "2026-11-22", "2026-11-24"]
    assert names(Retention(keep_days=5)) == ["2026-11-20", "2026-11-22"]
    # Both: kept when either rule keeps it.
    assert names(Retention(keep_runs=5, keep_days=3)) == ["2026-11-20"]

    RunLock(runs / "nightly-2026-11-20").path.touch()
    lock = RunLock(runs / "nightly-2026-11-20")
    assert lock.acquire()
    try:
        deleted = apply_retention(runs, "nightly", today, Retention(keep_runs=3))
    finally:
        lock.release()
    assert [p.name for p in deleted] == ["nightly-2026-11-22", "nightly-2026-11-24"]
    left = sorted(p.name for p in runs.iterdir())
    assert left == ["nightly-2026-11-20", "nightly-2026-11-25", "nightly-2026-11-26",
                    "nightly-2026-11-27", "nightly-2026-11-28", "nightly-eu-2026-01-01",
                    "nightly-latest"]


# ----------------------------------------------------------------------------- budget meter


def append(ledger: Path, *records: dict) -> None:
    """Append records holding only what the meter reads (the common fields filled in)."""
    # written as its own time ends, by a driver on the actors' clock (no skew), unless given
    write_ledger(ledger, [
        record(rec["type"], rec.get("ts", rec.get("end", rec.get("start", 0))), run_id="r",
               **{k: v for k, v in rec.items() if k not in ("type", "ts")})
        for rec in records], append=True)


def test_budget_meter_charges_held_time_and_projects_the_next_batch(tmp_path: Path) -> None:
    prices = load_pricing().to_dict()
    prices["device_hour"]["CPU"] = 3600.0  # 1 USD per actor-second: easy arithmetic
    pricing = load_pricing_from(tmp_path, prices)
    ledger = tmp_path / "ledger.jsonl"
    clock = Clock(100.0)
    budget = LedgerBudget(ledger, 20.0, "USD", pricing, clock=clock)

    append(ledger, {"type": "run-start"},
           {"type": "actor-load", "actor": "editor-0", "device_type": "CPU", "start": 100.0,
            "end": 102.0})
    clock.t = 104.0
    assert budget.spent() == pytest.approx(4.0)  # held since its load started
    assert budget.may_dispatch(4) and budget.may_dispatch(4)  # no estimate yet
    clock.t = 108.0
    append(ledger, *[{"type": "attempt", "outcome": "ok", "actor": "editor-0", "end": 108.0}
                     for _ in range(4)])
    # 4 rows in 4 s since the first dispatch: 1 s per row; 4 in flight + 4 new = 8 USD.
    assert budget.estimate(4, clock.t) == pytest.approx(8.0)
    assert budget.may_dispatch(4)  # 8 spent + 8 projected <= 20
    clock.t = 110.0
    append(ledger, *[{"type": "attempt", "outcome": "cache-hit", "actor": None}
                     for _ in range(10)])  # cache hits are free and finish nothing
    # 10 spent + (8 in flight + 4 new) x 1.5 s per row (6 s / 4 finished) = 28 > 20.
    assert not budget.may_dispatch(4)
    assert budget.refused and not budget.may_dispatch(1)  # a refusal is final
    status = budget.status()
    assert status == {"spent": 10.0, "cap": 20.0, "currency": "USD"}


def test_budget_meter_counts_earlier_invocations_like_the_report(tmp_path: Path) -> None:
    prices = load_pricing().to_dict()
    prices["device_hour"]["CPU"] = 3600.0
    pricing = load_pricing_from(tmp_path, prices)
    ledger = tmp_path / "ledger.jsonl"
    # First invocation, killed: its actor is charged to its last attempt (as the report does).
    append(ledger, {"type": "run-start"},
           {"type": "actor-load", "actor": "editor-0", "device_type": "CPU", "start": 0.0,
            "end": 1.0},
           {"type": "attempt", "outcome": "ok", "actor": "editor-0", "end": 5.0},
           {"type": "run-start"},
           {"type": "actor-load", "actor": "editor-0", "device_type": "CPU", "start": 50.0,
            "end": 51.0},
           {"type": "actor-stop", "actor": "editor-0", "end": 53.0})
    budget = LedgerBudget(ledger, 100.0, "USD", pricing, clock=Clock(1000.0))
    assert budget.status()["spent"] == pytest.approx(5.0 + 3.0)
    with open(ledger, "a") as f:  # a half-written line is not read until it is complete
        f.write('{"v": 1, "type": "actor-load", "actor": "editor-1", "device_type": "CPU", ')
    assert budget.status()["spent"] == pytest.approx(8.0)
    with open(ledger, "a") as f:
        f.write('"start": 990.0, "end": 991.0}\n')
    assert budget.status()["spent"] == pytest.approx(18.0)
    with pytest.raises(ValueError, match="differs from the pricing currency USD"):
        LedgerBudget(ledger, 1.0, "EUR", pricing)


def load_pricing_from(folder: Path, mapping: dict):
    path = folder / "prices.json"
    path.write_text(json.dumps(mapping))
    return load_pricing(path)


def test_default_date_is_today_in_the_jobs_timezone(tmp_path: Path) -> None:
    from jobs.runner import parse_date, today_for

    spec = load_job_spec(write_spec(tmp_path / "a", GOOD.replace("Europe/London",
                                                                  "Pacific/Auckland")))
    evening_utc = datetime(2026, 11, 27, 20, 0, tzinfo=ZoneInfo("UTC"))
    assert today_for(spec, evening_utc) == "2026-11-28"  # already tomorrow in Auckland
    unscheduled = load_job_spec(write_spec(tmp_path / "b", GOOD.split("schedule:")[0]))
    assert today_for(unscheduled, evening_utc) == "2026-11-27"
    assert parse_date("2026-02-28") == "2026-02-28"
    for bad in ("2026-02-30", "20261127", "27.11.2026", ""):
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            parse_date(bad)


def test_fast_path_sampler_options_reach_the_run_config(tmp_path: Path, monkeypatch) -> None:
    import jobs.runner
    import pipeline.runner

    spec = load_job_spec(write_spec(tmp_path, GOOD + "sampler: {step_cache: 0.2, fp8: true, compile: true}\n"))
    assert spec.sampler.step_cache == 0.2 and spec.sampler.fp8 is True and spec.sampler.compile is True
    exact = load_job_spec(write_spec(tmp_path / "exact", GOOD)).sampler
    assert exact.step_cache is None and exact.fp8 is False and exact.compile is False

    seen = {}
    monkeypatch.setattr(pipeline.runner, "run_batch",
                        lambda config, **kw: seen.setdefault("config", config))
    jobs.runner._run(spec, "nightly-2026-11-27", tmp_path / "run", spec.manifest, [], None, (),
                     False, False, 1, 0.0)
    assert seen["config"].step_cache == 0.2 and seen["config"].fp8 is True and seen["config"].compile is True

    path = write_spec(tmp_path / "bad", GOOD + "sampler:\n  step_cache: 2\n  fp8: 'yes'\n  compile: 1\n")
    problems = {p.key: p for p in problems_of(path)}
    assert set(problems) == {"sampler.step_cache", "sampler.fp8", "sampler.compile"}
    assert "between 0 and 1" in problems["sampler.step_cache"].message
    assert "must be true or false" in problems["sampler.fp8"].message


def test_float16_is_refused_and_bfloat16_suggested(tmp_path: Path) -> None:
    path = write_spec(tmp_path, GOOD + "sampler: {dtype: float16}\n")
    problems = {p.key: p for p in problems_of(path)}
    assert set(problems) == {"sampler.dtype"}
    assert "'float16' is not one of auto, float32, bfloat16; did you mean 'bfloat16'?" in problems["sampler.dtype"].message


def test_image_roots_resolve_against_the_spec_and_reach_the_run_config(tmp_path: Path, monkeypatch) -> None:
    import jobs.runner
    import pipeline.runner

    (tmp_path / "photos").mkdir()
    spec = load_job_spec(write_spec(tmp_path, GOOD + "image_roots: [photos, 's3://bucket/catalog/']\n"))
    assert spec.image_roots == (str((tmp_path / "photos").resolve()), "s3://bucket/catalog/")
    assert load_job_spec(write_spec(tmp_path / "none", GOOD)).image_roots == ()

    seen = {}
    monkeypatch.setattr(pipeline.runner, "run_batch", lambda config, **kw: seen.setdefault("config", config))
    jobs.runner._run(spec, "nightly-2026-11-27", tmp_path / "run", spec.manifest, ["/built/catalog"], None, (),
                     False, False, 1, 0.0)
    assert seen["config"].image_roots == [str((tmp_path / "photos").resolve()), "s3://bucket/catalog/",
                                          "/built/catalog"]  # the spec's, then a built manifest's folders


@pytest.mark.parametrize(("value", "message"), [
    ("[missing-folder]", "is not a folder; fix the path or remove it"),
    ("['ftp://host/photos/']", "remote roots must use a scheme pyarrow reads"),
    ("{a: 1}", "must be a list of folders or URI prefixes"),
])
def test_bad_image_roots_are_named_with_the_fix(tmp_path: Path, value: str, message: str) -> None:
    path = write_spec(tmp_path, GOOD + f"image_roots: {value}\n")
    problems = {p.key: p for p in problems_of(path)}
    assert set(problems) == {"image_roots"} and message in problems["image_roots"].message
    assert problems["image_roots"].line == line_of(path, "image_roots")


def test_budget_meter_charges_an_actor_on_a_skewed_node_its_held_time(tmp_path: Path) -> None:
    prices = load_pricing().to_dict()
    prices["device_hour"]["CPU"] = 3600.0  # 1 USD per actor-second
    pricing = load_pricing_from(tmp_path, prices)
    ledger = tmp_path / "ledger.jsonl"
    clock = Clock(1000.0)
    budget = LedgerBudget(ledger, 1000.0, "USD", pricing, clock=clock)
    # The actor's node runs 600 s behind the driver: it loaded from its 400 to its 402, and the
    # driver wrote the load record as the answer came, at its own 402.
    append(ledger, {"type": "run-start", "ts": 1000.0},
           {"type": "actor-load", "actor": "editor-0", "device_type": "CPU", "start": 400.0,
            "end": 402.0, "ts": 1002.0})
    clock.t = 1010.0
    assert budget.spent() == pytest.approx(10.0)  # held 10 s, not 610 s
    append(ledger, {"type": "attempt", "outcome": "ok", "actor": "editor-0", "end": 411.0,
                    "ts": 1011.5})
    clock.t = 1020.0
    assert budget.spent() == pytest.approx(20.0)


def test_jpg_is_jpeg_in_a_spec_as_in_manifests(tmp_path: Path) -> None:
    path = write_spec(tmp_path, """
        name: nightly
        manifest: m.parquet
        model: kontext-tiny
        output: out
        sampler:
          output_format: jpg
        """)
    assert load_job_spec(path).sampler.output_format == "jpeg"
