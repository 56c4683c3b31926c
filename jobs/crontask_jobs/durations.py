"""Durations as Kubernetes users write them (`90s`, `30m`, `1h30m`) or as plain seconds.

The same strings appear in CronTask specs and in the job's flags, so they must parse the same
way everywhere; zero and negative values are rejected because every duration here is a
threshold or a timeout, and a zero threshold would silently act on every row.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


class DurationError(ValueError):
    pass


def parse_duration(text: str) -> timedelta:
    """Parse `90s`, `30m`, `1h30m`, `1.5h`, `250ms` or plain integer seconds (`90`)."""
    raw = text.strip()
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
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The inverse of parse_duration for whole seconds, for logs and reports."""
    total = int(value.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)
    return out or f"{value.total_seconds():g}s"
