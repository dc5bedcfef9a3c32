"""Five-field cron expressions: parse, match, next firing time, systemd OnCalendar form.

Syntax (Vixie cron / cronie): ``minute hour day-of-month month day-of-week``, each field a
comma list of ``*``, ``N``, ``A-B``, ``*/S``, ``A-B/S`` or ``A/S`` (A to the field's end, step S);
months and weekdays also by name (``jan``, ``mon``); weekday 0 and 7 are Sunday. Macros:
``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly``, ``@yearly`` (``@annually``).

As in cron, when both day fields are restricted (neither starts with ``*``) a day matches if
EITHER matches ("the 1st and every Monday"); otherwise both must.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
               "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
SYSTEMD_DAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
# (name, lowest, highest, names for lowest.. or None)
_FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES),
    ("day of week", 0, 7, DAY_NAMES),
)
_SEARCH_DAYS = 366 * 8 + 2  # covers any leap-day schedule


class CronError(ValueError):
    """A cron expression that cannot be used; the message names the field and the fix."""


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday .. 6 = Saturday
    days_restricted: bool
    weekdays_restricted: bool

    def day_matches(self, day: date) -> bool:
        dom = day.day in self.days
        dow = (day.weekday() + 1) % 7 in self.weekdays
        if day.month not in self.months:
            return False
        if self.days_restricted and self.weekdays_restricted:
            return dom or dow
        return dom and dow

    def matches(self, moment: datetime) -> bool:
        """True when the schedule fires at ``moment``'s minute (wall-clock fields)."""
        return (moment.minute in self.minutes and moment.hour in self.hours
                and self.day_matches(moment.date()))

    def next_after(self, moment: datetime, tz: ZoneInfo) -> datetime:
        """The first firing strictly after ``moment`` (aware), in ``tz``. A wall-clock time
        the clock skips that day (spring forward) is no firing: systemd's timer skips it."""
        local = moment.astimezone(tz)
        day = local.date()
        for _ in range(_SEARCH_DAYS):
            if self.day_matches(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        candidate = datetime(day.year, day.month, day.day, hour, minute,
                                             tzinfo=tz)
                        if candidate > local and not skipped_by_clock(candidate):
                            return candidate
            day += timedelta(days=1)
        raise CronError(f"cron {self.text!r} never fires")

    def skipped_firings(self, start: date, tz: ZoneInfo, days: int = 366) -> list[datetime]:
        """Firings in the ``days`` from ``start`` whose wall-clock time does not exist in
        ``tz`` (a daylight-saving gap): no run happens that night."""
        skipped = []
        for offset in range(days):
            day = start + timedelta(days=offset)
            if not self.day_matches(day):
                continue
            for hour in self.hours:
                for minute in self.minutes:
                    moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)
                    if skipped_by_clock(moment):
                        skipped.append(moment)
        return skipped

    def on_calendar(self, timezone: str | None = None) -> list[str]:
        """systemd OnCalendar= expressions for this schedule (two when cron's day-of-month /
        day-of-week OR applies, since systemd ANDs them)."""
        def values(chosen: tuple[int, ...], full: range) -> str:
            return "*" if set(chosen) == set(full) else ",".join(f"{v:02d}" for v in chosen)

        months = values(self.months, range(1, 13))
        days = values(self.days, range(1, 32))
        clock = f"{values(self.hours, range(24))}:{values(self.minutes, range(60))}:00"
        weekdays = ",".join(SYSTEMD_DAYS[d] for d in self.weekdays)
        tz = f" {timezone}" if timezone else ""
        if self.days_restricted and self.weekdays_restricted:
            return [f"{weekdays} *-{months}-* {clock}{tz}", f"*-{months}-{days} {clock}{tz}"]
        prefix = f"{weekdays} " if self.weekdays_restricted else ""
        return [f"{prefix}*-{months}-{days} {clock}{tz}"]


def skipped_by_clock(moment: datetime) -> bool:
    """Whether an aware wall-clock time falls in its zone's daylight-saving gap (it does not
    exist: converting through UTC and back gives another wall time)."""
    back = moment.astimezone(UTC).astimezone(moment.tzinfo)
    return back.replace(tzinfo=None) != moment.replace(tzinfo=None)


def dst_gap_warning(cron: Cron, timezone: str, tz: ZoneInfo, start: date) -> str | None:
    """A warning naming the nights in the coming year the schedule does not run on, or None."""
    skipped = cron.skipped_firings(start, tz)
    if not skipped:
        return None
    nights = ", ".join(m.strftime("%Y-%m-%d %H:%M") for m in skipped[:4])
    return (f"warning: cron {cron.text!r} fires at a time that does not exist in {timezone} "
            f"when the clocks go forward ({nights}): the systemd timer has no run that night "
            "and does not catch it up. Fix: schedule outside the hour the clocks skip, or use "
            "timezone UTC")


def _value(text: str, field: int) -> int:
    name, low, high, names = _FIELDS[field]
    token = text.strip().lower()
    if names is not None and token in names:
        return names.index(token) + low
    if not token.isdigit():
        hint = f" or a name ({', '.join(names[:3])}, ...)" if names else ""
        raise CronError(f"{name} field: {text!r} is not a number{hint}")
    number = int(token)
    if not low <= number <= high:
        raise CronError(f"{name} field: {number} is out of range {low}-{high}")
    return number


def _parse_field(text: str, field: int) -> set[int]:
    name, low, high, _ = _FIELDS[field]
    chosen: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{name} field {text!r}: empty list item (two commas, or a "
                            "trailing comma)")
        part, _, step_text = item.partition("/")
        step = 1
        if step_text or item.endswith("/"):
            if not step_text.isdigit() or int(step_text) < 1:
                raise CronError(f"{name} field {item!r}: the step after '/' must be a whole "
                                "number of at least 1")
            step = int(step_text)
        if part == "*":
            start, end = low, high
        elif "-" in part:
            a, _, b = part.partition("-")
            start, end = _value(a, field), _value(b, field)
            if start > end:
                raise CronError(f"{name} field {item!r}: range runs backwards ({start} > {end})")
        else:
            start = _value(part, field)
            end = high if step_text else start  # "A/S": from A to the field's end
        chosen.update(range(start, end + 1, step))
    return chosen


def parse_cron(text: str) -> Cron:
    """Parse a 5-field cron expression (or a macro). Raises CronError saying what to fix."""
    if not isinstance(text, str) or not text.strip():
        raise CronError("cron expression is empty; give 5 fields, e.g. '0 2 * * *' (02:00 daily)")
    source = text.strip()
    expanded = MACROS.get(source.lower(), source)
    if expanded.startswith("@"):
        raise CronError(f"unknown cron macro {source!r}; use one of {', '.join(MACROS)} or 5 "
                        "fields")
    fields = expanded.split()
    if len(fields) != 5:
        raise CronError(f"cron {source!r} has {len(fields)} field(s), not 5: minute hour "
                        "day-of-month month day-of-week (e.g. '30 2 * * *' for 02:30 daily)")
    sets = [_parse_field(f, i) for i, f in enumerate(fields)]
    weekdays = {d % 7 for d in sets[4]}
    cron = Cron(
        text=source, minutes=tuple(sorted(sets[0])), hours=tuple(sorted(sets[1])),
        days=tuple(sorted(sets[2])), months=tuple(sorted(sets[3])),
        weekdays=tuple(sorted(weekdays)), days_restricted=not fields[2].startswith("*"),
        weekdays_restricted=not fields[4].startswith("*"))
    day_or = cron.days_restricted and cron.weekdays_restricted
    if not day_or and not any(d <= _month_days(m) for m in cron.months for d in cron.days):
        raise CronError(f"cron {source!r} never fires: no month in its month field has any of "
                        "the days in its day-of-month field")
    return cron


def _month_days(month: int) -> int:
    return calendar.monthrange(2024, month)[1]  # a leap year: 29 February counts
