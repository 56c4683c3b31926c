"""Cron schedules read the way the CronJob controller reads them, and their real intervals.

Parsing mirrors robfig/cron v3 (``ParseStandard``, which the CronJob controller and the API
server's validation use): five fields or a descriptor, the same bounds, names, ranges, steps and
the same day-of-month/day-of-week rule, so the operator refuses exactly the schedules the API
server would, with a message saying why.

Intervals are real elapsed time in the schedule's time zone, because that is what a deadline
measures. A schedule names wall-clock times; each becomes the instant it first occurs: a time the
spring-forward jump skips does not fire (as in the controller), and a time the fall-back hour
repeats counts once. So a daily ``30 2 * * *`` in Europe/Berlin is about 23 h apart at its
shortest (the day the clocks spring forward is skipped, the fall-back day's gap is 25 h), never
the one hour between the two readings of 02:30 on the fall-back night. (The controller does start
a second run at the repeated 02:30; with a deadline sized for the intended interval and
``concurrencyPolicy: Forbid`` that duplicate is skipped while the first run still goes.)

Pure functions of the schedule, the zone and a clock; nothing here raises anything but
ScheduleError.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Final

DESCRIPTORS: Final = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS: Final = {n: i + 1 for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"))}
_DAYS: Final = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_BOUNDS: Final = ((0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 6, _DAYS))
_FIELD_NAMES: Final = ("minute", "hour", "day of month", "month", "day of week")
_GO_SPACE: Final = frozenset("\t\n\v\f\r \x85\xa0")
SEARCH_YEARS: Final = 9
"""How far ahead a next slot is looked for (robfig gives up after 5 years; a Feb 29 schedule
can wait 8 years around 2100)."""
SAMPLE_SLOTS: Final = 1500
SAMPLE_DAYS: Final = 366
"""Intervals are measured over the first SAMPLE_SLOTS slots (at least one full day of any
schedule) or a year, whichever ends first, plus every clock change in the coming year."""


class ScheduleError(ValueError):
    """A schedule or time zone the CronJob controller would not accept, or one that never fires."""


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: the allowed values of each field, and whether day-of-month or
    day-of-week was written as ``*`` (robfig's star bit, which decides AND versus OR)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    day_star: bool
    weekday_star: bool

    def day_matches(self, day: dt.date) -> bool:
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        if self.day_star or self.weekday_star:
            return dom and dow
        return dom or dow


def time_zone(name: str) -> dt.tzinfo:
    if (not name or len(name) > 255 or name.startswith(("/", ".")) or ".." in name
            or name.lower() == "local"):
        raise ScheduleError(f"unknown time zone {name[:80]!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, TypeError) as exc:
        raise ScheduleError(f"unknown time zone {name[:80]!r}") from exc


def _go_fields(text: str) -> list[str]:
    """strings.Fields: split on Go's white space (Python's split also splits on \\x1c-\\x1f)."""
    out: list[str] = []
    current: list[str] = []
    for char in text:
        if char in _GO_SPACE or (ord(char) > 0xFF and char.isspace()):
            if current:
                out.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        out.append("".join(current))
    return out


def _go_atoi(text: str, where: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body or not all("0" <= c <= "9" for c in body) or len(body) > 19:
        raise ScheduleError(f"{where}: {text[:20]!r} is not a number")
    value = int(text)
    if value < 0:
        raise ScheduleError(f"{where}: negative number {value}")
    return value


def _range(expr: str, index: int) -> tuple[set[int], bool]:
    low, high, names = _BOUNDS[index]
    where = _FIELD_NAMES[index]
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    star = False
    if low_and_high[0] in ("*", "?"):
        start, end, star = low, high, True
    else:
        def value(text: str) -> int:
            if names and text.lower() in names:
                return names[text.lower()]
            return _go_atoi(text, where)

        start = value(low_and_high[0])
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = value(low_and_high[1])
        else:
            raise ScheduleError(f"{where}: too many hyphens in {expr[:40]!r}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _go_atoi(range_and_step[1], where)
        if len(low_and_high) == 1:
            end = high
        if step > 1:
            star = False
    else:
        raise ScheduleError(f"{where}: too many slashes in {expr[:40]!r}")
    if start < low:
        raise ScheduleError(f"{where}: {start} is below the minimum {low}")
    if end > high:
        raise ScheduleError(f"{where}: {end} is above the maximum {high}")
    if start > end:
        raise ScheduleError(f"{where}: the range {start}-{end} runs backwards")
    if step == 0:
        raise ScheduleError(f"{where}: a step must be positive")
    return set(range(start, end + 1, step)), star


def _field(text: str, index: int) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for expr in (part for part in text.split(",") if part):
        got, is_star = _range(expr, index)
        values |= got
        star = star or is_star
    return frozenset(values), star


@lru_cache(maxsize=4096)
def parse(schedule: str) -> Cron:
    """The schedule as the CronJob controller reads it; ScheduleError (saying why) otherwise."""
    if not isinstance(schedule, str) or not schedule:
        raise ScheduleError("the schedule is empty")
    if "TZ" in schedule:
        raise ScheduleError("set the time zone with spec.timeZone, not TZ= in the schedule")
    if schedule.startswith("@"):
        if schedule.startswith("@every"):
            raise ScheduleError("@every is not supported: its slots depend on when the CronJob"
                                " controller last started; write a cron expression")
        if schedule not in DESCRIPTORS:
            raise ScheduleError(f"unknown schedule descriptor {schedule[:40]!r}")
        schedule = DESCRIPTORS[schedule]
    fields = _go_fields(schedule)
    if len(fields) != 5:
        raise ScheduleError("a schedule has five fields (minute hour day-of-month month"
                            f" day-of-week), found {len(fields)}: {schedule[:80]!r}")
    try:
        parsed = [_field(text, i) for i, text in enumerate(fields)]
    except ScheduleError as exc:
        raise ScheduleError(f"invalid schedule {schedule[:80]!r}: {exc}") from exc
    return Cron(minutes=parsed[0][0], hours=parsed[1][0], days=parsed[2][0],
                months=parsed[3][0], weekdays=parsed[4][0], day_star=parsed[2][1],
                weekday_star=parsed[4][1])


def check(schedule: str) -> None:
    parse(schedule)


def next_wall(cron: Cron, after: dt.datetime) -> dt.datetime | None:
    """The first wall-clock minute strictly after the naive ``after`` that the schedule names,
    or None within SEARCH_YEARS."""
    start = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    minutes, hours = sorted(cron.minutes), sorted(cron.hours)
    if not minutes or not hours:
        return None
    day = start.date()
    last = day + dt.timedelta(days=366 * SEARCH_YEARS)
    while day <= last:
        if day.month in cron.months and cron.day_matches(day):
            first = start if day == start.date() else None
            for hour in hours:
                if first is not None and hour < first.hour:
                    continue
                for minute in minutes:
                    if first is not None and hour == first.hour and minute < first.minute:
                        continue
                    return dt.datetime.combine(day, dt.time(hour, minute))
        day += dt.timedelta(days=1)
    return None


def _instant(wall: dt.datetime, tz: dt.tzinfo) -> dt.datetime | None:
    """The instant a wall-clock time first occurs; None when the clocks skip it."""
    aware = wall.replace(tzinfo=tz, fold=0)
    utc = aware.astimezone(dt.UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != wall:
        return None
    return utc


def _instants(cron: Cron, tz: dt.tzinfo, after: dt.datetime) -> Iterator[dt.datetime]:
    """Firing instants strictly after the instant ``after``, in order."""
    wall = after.astimezone(tz).replace(tzinfo=None)
    while True:
        nxt = next_wall(cron, wall)
        if nxt is None:
            return
        wall = nxt
        instant = _instant(nxt, tz)
        if instant is not None and instant > after:
            yield instant


def next_slot(schedule: str, tz_name: str, now: dt.datetime) -> dt.datetime:
    """The first slot strictly after ``now``, in UTC."""
    cron, tz = parse(schedule), time_zone(tz_name)
    for instant in _instants(cron, tz, now):
        return instant
    raise ScheduleError(f"schedule {schedule[:80]!r} never fires")


def _transitions(tz: dt.tzinfo, start: dt.datetime, days: int) -> list[dt.datetime]:
    """The instants within ``days`` of ``start`` at which the zone's UTC offset changes."""
    step = dt.timedelta(hours=6)
    out, t, end = [], start, start + dt.timedelta(days=days)
    offset = t.astimezone(tz).utcoffset()
    while t < end:
        nxt = t + step
        nxt_offset = nxt.astimezone(tz).utcoffset()
        if nxt_offset != offset:
            low, high = t, nxt
            while high - low > dt.timedelta(minutes=1):
                mid = low + (high - low) / 2
                if mid.astimezone(tz).utcoffset() == offset:
                    low = mid
                else:
                    high = mid
            out.append(high)
        t, offset = nxt, nxt_offset
    return out


def shortest_interval(schedule: str, tz_name: str, now: dt.datetime) -> int:
    """The shortest real time, in seconds, between two consecutive slots from ``now`` on."""
    cron, tz = parse(schedule), time_zone(tz_name)
    return _shortest(cron, tz_name, tz, now.astimezone(dt.UTC).replace(
        hour=0, minute=0, second=0, microsecond=0))


@lru_cache(maxsize=4096)
def _shortest(cron: Cron, tz_name: str, tz: dt.tzinfo, day: dt.datetime) -> int:
    """Per schedule, zone and UTC day: the answer is stable over a day, and a reconcile of
    every CronTask asks for it."""
    horizon = day + dt.timedelta(days=SAMPLE_DAYS)
    slots: list[dt.datetime] = []
    for instant in _instants(cron, tz, day):
        slots.append(instant)
        if len(slots) >= SAMPLE_SLOTS or (len(slots) >= 2 and instant > horizon):
            break
        if len(slots) >= 2 and (slots[-1] - slots[-2]).total_seconds() <= 60:
            return 60  # a cron schedule cannot fire closer than a minute apart
    if len(slots) < 2:
        raise ScheduleError("the schedule fires at most once in the next years")
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(slots)]
    if min(gaps) > 60:
        for change in _transitions(tz, day, SAMPLE_DAYS):
            before = None
            for instant in _instants(cron, tz, change - dt.timedelta(hours=27)):
                if instant >= change:
                    if before is not None:
                        gaps.append((instant - before).total_seconds())
                    break
                before = instant
    return int(min(gaps))
