"""Schedules: parsed like the CronJob controller, intervals in real elapsed time, sane deadlines.

The margin-rule table of README ("Timing that cannot stall") is checked here line by line; a
brute-force oracle (every UTC minute around each clock change) checks the shortest interval for
any daily-pattern schedule in zones with daylight saving time; and for any schedule and zone the
default deadline is at least 5/6 of the real shortest interval.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from typing import Any

import pytest
from crd_strategies import ALL_ZONES, ZONES, schedules
from hypothesis import given, settings
from hypothesis import strategies as st
from operator_helpers import NOW, crontask_spec

from crontask_operator import schedule
from crontask_operator.spec import SpecError, parse_spec
from crontask_operator.validation import Refusal, Timing, resolve

HOUR, DAY = 3600, 86400


def timing(task: str = "decay", **extra: Any) -> Timing:
    decision = resolve("t", parse_spec(crontask_spec(task, **extra)), NOW)
    assert isinstance(decision, Timing), decision
    return decision


# The README's table, line by line: (schedule, zone, real shortest interval, deadline).
TABLE = [
    ("* * * * *", "Etc/UTC", 60, 50),
    ("*/5 * * * *", "Etc/UTC", 300, 270),
    ("*/15 * * * *", "Etc/UTC", 900, 810),
    ("0 * * * *", "Etc/UTC", HOUR, HOUR - 300),
    ("30 2 * * *", "Europe/Berlin", DAY, DAY - 300),
    ("30 1 * * *", "America/New_York", 23 * HOUR, 23 * HOUR - 300),
    ("0 1,3 * * *", "America/New_York", HOUR, HOUR - 300),
    ("0 0 * * 0", "Etc/UTC", 7 * DAY, 7 * DAY - 300),
]


@pytest.mark.parametrize(("cron", "zone", "interval", "deadline"), TABLE)
def test_the_margin_rule_table(cron: str, zone: str, interval: int, deadline: int) -> None:
    got = timing(schedule=cron, timeZone=zone)
    assert (got.shortest_interval, got.active_deadline_seconds) == (interval, deadline)


def test_every_minute_gets_a_usable_deadline() -> None:
    """Issue 8.2: `* * * * *` had activeDeadlineSeconds 1 (the margin ate the minute)."""
    assert timing(schedule="* * * * *").active_deadline_seconds == 50


@pytest.mark.parametrize(("cron", "zone"), [("30 2 * * *", "Europe/Berlin"),
                                            ("30 1 * * *", "America/New_York")])
@pytest.mark.parametrize("day", [dt.date(2026, 1, 5), dt.date(2026, 10, 24),
                                 dt.date(2026, 10, 31), dt.date(2026, 3, 7),
                                 dt.date(2026, 11, 1), dt.date(2027, 3, 27)])
def test_a_daily_task_never_gets_a_one_hour_interval(cron: str, zone: str,
                                                     day: dt.date) -> None:
    """Issue 8.2: the fall-back day's repeated wall time looked like a 1 h interval, on every
    date. Around each clock change, and far from one, it is about a day."""
    now = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    gap = schedule.shortest_interval(cron, zone, now)
    assert gap >= 23 * HOUR
    decision = resolve("t", parse_spec(crontask_spec("decay", schedule=cron, timeZone=zone)),
                       now)
    assert isinstance(decision, Timing)
    assert decision.active_deadline_seconds >= 22 * HOUR


def test_next_slot_is_in_real_time() -> None:
    assert schedule.next_slot("30 2 * * *", "Europe/Berlin", NOW) == dt.datetime(
        2026, 1, 6, 1, 30, tzinfo=dt.UTC)
    spring = dt.datetime(2026, 3, 28, 12, tzinfo=dt.UTC)  # Berlin skips 02:30 on the 29th
    assert schedule.next_slot("30 2 * * *", "Europe/Berlin", spring) == dt.datetime(
        2026, 3, 30, 0, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "fragment"), [
    ("61 * * * *", "above the maximum 59"), ("* * * * 7", "above the maximum 6"),
    ("*/0 * * * *", "step must be positive"), ("5-1 * * * *", "runs backwards"),
    ("H * * * *", "not a number"), ("0 0 L * *", "not a number"),
    ("@every 5m", "@every is not supported"), ("TZ=UTC 0 * * * *", "spec.timeZone"),
    ("@daily ", "unknown schedule descriptor"), ("* * * * * *", "five fields"),
    ("0 0 30 2 *", "fires at most once"), ("", "empty")])
def test_schedules_the_controller_refuses(text: str, fragment: str) -> None:
    with pytest.raises(schedule.ScheduleError) as info:
        schedule.shortest_interval(text, "Etc/UTC", NOW)
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["0 12 * JAN,jul Mon", "? * * * ?", "1,,2 * * * *",
                                  "+5 * * * *", "*/1 * * * *"])
def test_schedules_robfig_accepts(text: str) -> None:
    assert schedule.shortest_interval(text, "Etc/UTC", NOW) >= 60


def test_day_of_month_and_week_follow_robfig() -> None:
    """Both restricted: either matches (OR); one written as * (or */1): both must (AND)."""
    either = schedule.parse("0 0 13 * 5")
    assert either.day_matches(dt.date(2026, 2, 13)) and either.day_matches(dt.date(2026, 1, 2))
    both = schedule.parse("0 0 */1 * 5")
    assert not both.day_matches(dt.date(2026, 1, 13)) and both.day_matches(dt.date(2026, 1, 2))
    stepped = schedule.parse("0 0 */2 * 5")  # a step above 1 is not a star
    assert stepped.day_matches(dt.date(2026, 1, 2)) and stepped.day_matches(dt.date(2026, 1, 3))


def test_time_zones_are_checked() -> None:
    for bad in ("Mars/Olympus_Mons", "../etc/passwd", "/etc/localtime", "Local", "", "x" * 300):
        with pytest.raises(schedule.ScheduleError):
            schedule.time_zone(bad)


def oracle_shortest(cron: str, zone: str, now: dt.datetime) -> int:
    """Every UTC minute around each clock change of the coming year, and two plain days:
    the minutes whose wall time matches, each wall time counted at its first occurrence."""
    parsed, tz = schedule.parse(cron), zoneinfo.ZoneInfo(zone)
    changes = [t for t in (now + dt.timedelta(hours=h) for h in range(0, 366 * 24, 1))
               if t.astimezone(tz).utcoffset() != (t - dt.timedelta(hours=1)).astimezone(
                   tz).utcoffset()]
    windows = [(now, now + dt.timedelta(days=2))] + [
        (c - dt.timedelta(hours=30), c + dt.timedelta(hours=30)) for c in changes]
    gaps = []
    for start, end in windows:
        fires, t = [], start.replace(second=0, microsecond=0)
        while t < end:
            wall = t.astimezone(tz).replace(tzinfo=None)
            repeat = any((t - dt.timedelta(minutes=d)).astimezone(tz).replace(tzinfo=None)
                         == wall for d in (30, 60, 120))
            if (not repeat and wall.minute in parsed.minutes and wall.hour in parsed.hours
                    and wall.month in parsed.months and parsed.day_matches(wall.date())):
                fires.append(t)
            t += dt.timedelta(minutes=1)
        gaps += [(b - a).total_seconds() for a, b in itertools.pairwise(fires)]
    return int(min(gaps))


daily = st.tuples(
    st.lists(st.integers(0, 59), min_size=1, max_size=3, unique=True),
    st.lists(st.integers(0, 23), min_size=1, max_size=3, unique=True),
).map(lambda mh: f"{','.join(map(str, sorted(mh[0])))} {','.join(map(str, sorted(mh[1])))}"
      " * * *")
dst_zones = st.sampled_from(["Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
                             "America/Santiago", "Pacific/Chatham", "Europe/London"])


@settings(max_examples=8)  # the oracle walks ~10,000 minutes per example
@given(daily, dst_zones)
def test_shortest_interval_matches_a_brute_force_oracle(cron: str, zone: str) -> None:
    now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    assert schedule.shortest_interval(cron, zone, now) == oracle_shortest(cron, zone, now)


@given(schedules, st.one_of(st.sampled_from(ZONES), st.sampled_from(ALL_ZONES)),
       st.sampled_from(["recover", "decay"]))
def test_any_schedule_gets_a_deadline_of_at_least_five_sixths_of_its_interval(
        cron: str, zone: str, task: str) -> None:
    try:
        spec = parse_spec(crontask_spec(task, schedule=cron, timeZone=zone))
    except SpecError:
        return  # the CRD's schema refuses it (an empty or overlong schedule or zone)
    decision = resolve("t", spec, NOW)
    if isinstance(decision, Refusal):
        assert decision.reason == "InvalidSchedule"
        return
    gap = decision.shortest_interval
    assert gap >= 60
    assert decision.active_deadline_seconds >= gap * 5 / 6
    assert decision.active_deadline_seconds <= gap - 10
    assert 60 <= decision.starting_deadline_seconds <= 3600
