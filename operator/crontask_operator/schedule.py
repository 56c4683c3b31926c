"""Reading cron schedules the way the CronJob controller will.

The operator needs three facts about a schedule before it writes a CronJob: whether it is valid
at all (the server's answer still wins: a 422 is reported verbatim), the shortest gap between two
slots (to default ``activeDeadlineSeconds`` and ``startingDeadlineSeconds``) and the next slot
(``status.nextScheduleTime``). All are pure functions of the schedule, the time zone and a clock.
"""

from __future__ import annotations

import datetime as dt
import itertools
import zoneinfo
from typing import Final

from croniter import CroniterBadCronError, CroniterBadDateError, croniter

MACROS: Final = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                           "@hourly"})
SAMPLE_SLOTS: Final = 400
"""Enough consecutive slots to see every gap of a schedule that repeats within a week or so."""


class ScheduleError(ValueError):
    """A schedule or time zone the CronJob controller would not accept."""


def time_zone(name: str) -> dt.tzinfo:
    if name.startswith(("/", ".")) or ".." in name:
        raise ScheduleError(f"unknown time zone {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(f"unknown time zone {name!r}") from exc


def check(schedule: str) -> None:
    """Raise ScheduleError unless ``schedule`` is five cron fields or a macro Kubernetes knows.

    croniter alone is not enough: it also accepts a sixth (seconds) field, which the CronJob
    controller refuses.
    """
    text = schedule.strip()
    if text.startswith("@"):
        if text not in MACROS:
            raise ScheduleError(f"unknown schedule macro {text!r}")
        return
    if text.upper().startswith(("TZ=", "CRON_TZ=")):
        raise ScheduleError("set the time zone with spec.timeZone, not TZ= in the schedule")
    if len(text.split()) != 5:
        raise ScheduleError(f"a schedule has five fields (minute hour day month weekday): {text!r}")
    if not croniter.is_valid(text):
        raise ScheduleError(f"invalid schedule {text!r}")


def _iter(schedule: str, tz_name: str, start: dt.datetime) -> croniter:
    check(schedule)
    return croniter(schedule.strip(), start.astimezone(time_zone(tz_name)))


def next_slot(schedule: str, tz_name: str, now: dt.datetime) -> dt.datetime:
    """The first slot strictly after ``now``, in UTC."""
    try:
        value: dt.datetime = _iter(schedule, tz_name, now).get_next(dt.datetime)
    except (CroniterBadCronError, CroniterBadDateError) as exc:
        raise ScheduleError(f"schedule {schedule!r} never fires") from exc
    return value.astimezone(dt.UTC)


def shortest_interval(schedule: str, tz_name: str, now: dt.datetime) -> int:
    """The smallest gap in seconds between consecutive slots over the next few hundred slots."""
    try:
        it = _iter(schedule, tz_name, now)
        slots = [it.get_next(dt.datetime).timestamp() for _ in range(SAMPLE_SLOTS)]
    except (CroniterBadCronError, CroniterBadDateError) as exc:
        raise ScheduleError(f"schedule {schedule!r} never fires") from exc
    return int(min(b - a for a, b in itertools.pairwise(slots)))
