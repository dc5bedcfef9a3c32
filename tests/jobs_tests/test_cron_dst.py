"""A nightly time the clocks skip (spring forward) has no run that night under systemd: the
schedule's next firings skip it, and `job validate` / `job schedule` warn with the nights."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from jobs import cli
from jobs.cron import dst_gap_warning, parse_cron, skipped_by_clock

NEW_YORK = ZoneInfo("America/New_York")
EXAMPLE = Path(__file__).resolve().parents[2] / "jobs" / "examples" / "demo-nightly.yaml"


def test_the_skipped_hour_is_no_firing() -> None:
    cron = parse_cron("0 2 * * *")
    assert skipped_by_clock(datetime(2027, 3, 14, 2, 0, tzinfo=NEW_YORK))
    assert not skipped_by_clock(datetime(2027, 3, 14, 3, 0, tzinfo=NEW_YORK))
    # the night of 2027-03-14 has no 02:00 in New York: the next firing is the 15th
    after = cron.next_after(datetime(2027, 3, 13, 12, 0, tzinfo=NEW_YORK), NEW_YORK)
    assert after == datetime(2027, 3, 15, 2, 0, tzinfo=NEW_YORK)
    assert cron.skipped_firings(date(2026, 12, 1), NEW_YORK) == [
        datetime(2027, 3, 14, 2, 0, tzinfo=NEW_YORK)]


def test_warning_names_the_nights_and_the_fix() -> None:
    warning = dst_gap_warning(parse_cron("30 2 * * *"), "Europe/Berlin",
                              ZoneInfo("Europe/Berlin"), date(2026, 12, 1))
    assert warning is not None and "2027-03-28 02:30" in warning and "UTC" in warning
    # 02:00 in London exists every night (the clocks skip 01:00-02:00 there); UTC has no gap
    assert dst_gap_warning(parse_cron("0 2 * * *"), "Europe/London",
                           ZoneInfo("Europe/London"), date(2026, 12, 1)) is None
    assert dst_gap_warning(parse_cron("30 2 * * *"), "UTC", ZoneInfo("UTC"),
                           date(2026, 12, 1)) is None


def test_validate_warns_about_a_skipped_night(tmp_path: Path, capsys) -> None:
    text = EXAMPLE.read_text()
    assert "timezone: Europe/London" in text and 'cron: "0 2 * * *"' in text
    here = EXAMPLE.parent
    spec = tmp_path / "demo-nightly.yaml"
    spec.write_text(text.replace("timezone: Europe/London", "timezone: America/New_York")
                    .replace("../../manifests/", f"{(here / '../../manifests').resolve()}/")
                    .replace("variants: demo-variants.yaml",
                             f"variants: {here / 'demo-variants.yaml'}")
                    .replace("output: ../../runs/jobs", f"output: {tmp_path / 'out'}"))
    assert cli.main(["job", "validate", str(spec)]) == 0
    err = capsys.readouterr().err
    assert "does not exist in America/New_York" in err and "03-" in err
    assert cli.main(["job", "validate", str(EXAMPLE)]) == 0
    assert "does not exist" not in capsys.readouterr().err
