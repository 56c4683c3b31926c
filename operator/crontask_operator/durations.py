"""Durations as the jobs CLI spells them: ``90s``, ``30m``, ``1h30m`` or integer seconds.

The CRD only admits the unit-suffixed form (``^([0-9]+h)?([0-9]+m)?([0-9]+s)?$``) because that
is also what CEL's ``duration()`` parses, so cross-field rules can live in the schema; bare
integers are accepted here for values that come from elsewhere (flags, the chart).
"""

from __future__ import annotations

import re
from typing import Final

DURATION_PATTERN: Final = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
_UNIT = re.compile(DURATION_PATTERN)


def parse_duration(text: str | int) -> int:
    """Seconds in a duration; ValueError for anything else (including the empty string)."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"negative duration: {text}")
        return text
    value = str(text).strip()
    if value.isdigit():
        return int(value)
    match = _UNIT.match(value)
    if not value or match is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90s, 30m, 1h30m or seconds")
    hours, minutes, seconds = (int(g[:-1]) if g else 0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def format_duration(seconds: int) -> str:
    """The shortest unit-suffixed spelling, as accepted by both the CLI and the CRD."""
    if seconds <= 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
