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
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Final

DURATION_PATTERN: Final = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
"""The form a CronTask's schema admits: whole hours, minutes and seconds, which is also what
CEL's `duration()` parses, so cross-field rules can live in the schema. The parser below
accepts more (`1.5h`, `250ms`, plain seconds) for flags and environment variables."""

MAX_DURATION: Final = timedelta(days=36500)
"""About a hundred years: far beyond any threshold or timeout a task needs, and far within
what both sides compute with it (a timedelta, a PostgreSQL interval, `now() - interval`)."""

MAX_DURATION_CHARS: Final = 64
"""Longer text is refused before it is parsed (or echoed in a message)."""

_UNIT_MICROSECONDS: Final = {"ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}
_PART: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", re.ASCII)


class DurationError(ValueError):
    pass


def _microseconds(raw: str, shown: str) -> Decimal:
    if raw.isascii() and raw.isdigit():
        return Decimal(raw) * _UNIT_MICROSECONDS["s"]
    pos, total = 0, Decimal(0)
    for match in _PART.finditer(raw):
        if match.start() != pos:
            break
        total += Decimal(match.group(1)) * _UNIT_MICROSECONDS[match.group(2)]
        pos = match.end()
    if pos != len(raw) or pos == 0:
        raise DurationError(f"invalid duration {shown}: use e.g. 90s, 30m, 1h30m or plain seconds")
    return total


def parse_duration(text: str | int) -> timedelta:
    """Parse `90s`, `30m`, `1h30m`, `1.5h`, `250ms` or whole seconds (`90` or the int 90).

    Exact (decimal arithmetic, rounded to the microsecond a timedelta holds); raises only
    DurationError: for garbage, for zero or less, for a value that rounds to zero microseconds
    and for one beyond MAX_DURATION.
    """
    if isinstance(text, bool):
        raise DurationError(f"invalid duration {text!r}: use e.g. 90s, 30m, 1h30m or plain seconds")
    if isinstance(text, int):
        shown = repr(text) if abs(text) < 10**MAX_DURATION_CHARS else "(a very long number)"
        micro = Decimal(text) * _UNIT_MICROSECONDS["s"]
    else:
        raw = str(text).strip()
        if not raw:
            raise DurationError("empty duration")
        if len(raw) > MAX_DURATION_CHARS:
            raise DurationError(f"invalid duration: {len(raw)} characters is too long for one")
        shown = repr(text)
        micro = _microseconds(raw, shown)
    if micro <= 0:
        raise DurationError(f"duration {shown} must be positive")
    whole = int(micro.to_integral_value(rounding=ROUND_HALF_EVEN))
    if whole > MAX_DURATION // timedelta(microseconds=1):
        raise DurationError(f"duration {shown} is longer than the maximum "
                            f"{MAX_DURATION.days} days")
    if whole == 0:
        raise DurationError(f"duration {shown} is shorter than a microsecond")
    return timedelta(microseconds=whole)


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
