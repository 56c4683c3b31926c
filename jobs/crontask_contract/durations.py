"""Durations as Kubernetes users write them (`90s`, `30m`, `1h30m`) or as plain seconds.

The same strings appear in a CronTask's spec, which the operator reads to build the CronJob and
check deadlines, and in the job's flags, which the job parses: one parser on both sides means a
threshold can never mean one thing to the operator and another to the job. Zero and negative
values are refused because every duration here is a threshold or a timeout, and a zero
threshold would silently act on every row.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Final

DURATION_PATTERN: Final = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
"""The form a CronTask's schema admits: whole hours, minutes and seconds, which is also what
CEL's `duration()` parses, so cross-field rules can live in the schema. The parser below
accepts more (`1.5h`, `250ms`, plain seconds) for flags and environment variables."""

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_duration(text: str | int) -> timedelta:
    """Parse `90s`, `30m`, `1h30m`, `1.5h`, `250ms` or whole seconds (`90` or the int 90)."""
    if isinstance(text, int) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip()
        if not raw:
            raise DurationError("empty duration")
        if raw.isdigit():
            seconds = float(int(raw))
        else:
            pos, seconds = 0, 0.0
            for match in _PART.finditer(raw):
                if match.start() != pos:
                    break
                seconds += float(match.group(1)) * _UNITS[match.group(2)]
                pos = match.end()
            if pos != len(raw) or pos == 0:
                raise DurationError(
                    f"invalid duration {text!r}: use e.g. 90s, 30m, 1h30m or plain seconds"
                )
    if seconds <= 0:
        raise DurationError(f"duration {text!r} must be positive")
    try:
        return timedelta(seconds=seconds)
    except OverflowError as exc:  # beyond timedelta's 999999999 days
        raise DurationError(f"duration {str(text)[:40]!r} is too long") from exc


def duration_seconds(text: str | int) -> int:
    """Whole seconds, rounded up: what Kubernetes' integer-second fields can hold."""
    return math.ceil(parse_duration(text).total_seconds())


def format_duration(value: timedelta | int) -> str:
    """The shortest spelling in the schema's form (whole seconds), for messages and reports."""
    total = int(value.total_seconds()) if isinstance(value, timedelta) else int(value)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)
    if out:
        return out
    return f"{value.total_seconds():g}s" if isinstance(value, timedelta) else f"{total}s"
