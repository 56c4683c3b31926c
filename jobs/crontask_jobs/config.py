"""Flag and environment values, parsed and validated before any work starts.

Every flag can also come from `CRONTASK_<FLAG_UPPER_SNAKE>` (flags win), because a CronJob's pod
template sets environment more comfortably than arguments. A bad value from either source is a
configuration error (exit 2) whose message names where the value came from.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Final

from crontask_contract.durations import DurationError, format_duration, parse_duration
from crontask_jobs.decay_rules import MIN_MAX_DECAY_PER_RUN
from crontask_jobs.session import MAX_TIMEOUT

ENV_PREFIX: Final = "CRONTASK_"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS: Final = ("json", "text")


class ConfigError(ValueError):
    pass


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise ConfigError(str(exc)) from exc


MAX_TEXT_CHARS: Final = 64
"""A flag value longer than this is refused without being echoed."""


def _short(text: str) -> str:
    value = text.strip()
    if len(value) > MAX_TEXT_CHARS:
        raise ConfigError(f"a value of {len(value)} characters is too long")
    return value


def bounded_int(text: str, maximum: int) -> int:
    """A whole number from 1 to `maximum`, in ASCII digits (no sign, no underscores)."""
    value = _short(text)
    if not (value.isascii() and value.isdigit()):
        raise ConfigError(f"{value!r} is not a positive integer")
    number = int(value)
    if not 0 < number <= maximum:
        raise ConfigError(f"{value!r} must be an integer from 1 to {maximum}")
    return number


def batch_size(text: str) -> int:
    return bounded_int(text, 1_000_000)


def pipelines(text: str) -> int:
    """Each pipeline holds a database connection: a thousand is far beyond any server's."""
    return bounded_int(text, 1_000)


def decay_workers(text: str) -> int:
    """Each worker is a connection busy for the whole run: a few use a server's cores."""
    return bounded_int(text, 16)


def in_flight(text: str) -> int:
    return bounded_int(text, 2**31 - 1)


def points(text: str) -> Decimal:
    value = _short(text)
    try:
        number = Decimal(value)
    except InvalidOperation as exc:
        raise ConfigError(f"{value!r} is not a number") from exc
    if not number.is_finite() or number < MIN_MAX_DECAY_PER_RUN or number > 100:
        raise ConfigError(f"{value!r} must be a number of points from {MIN_MAX_DECAY_PER_RUN}"
                          " (one cent) to 100")
    return number


def log_level(text: str) -> int:
    name = _short(text).upper()
    if name not in LOG_LEVELS:
        raise ConfigError(f"{text!r} is not a log level ({', '.join(LOG_LEVELS)})")
    return int(logging.getLevelName(name))


def log_format(text: str) -> str:
    value = _short(text).lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"{text!r} is not a log format ({', '.join(LOG_FORMATS)})")
    return value


def timeout(text: str) -> timedelta:
    """A duration that PostgreSQL's millisecond timeouts can hold (a stage's becomes one)."""
    value = duration(text)
    if value > MAX_TIMEOUT:
        raise ConfigError(f"{text.strip()!r} is longer than PostgreSQL's statement_timeout holds"
                          f" ({format_duration(MAX_TIMEOUT)})")
    return value


def stage_timeout(text: str) -> tuple[str | None, timedelta]:
    """`DUR` (the default for every stage) or `STAGE=DUR`."""
    name, sep, value = _short(text).partition("=")
    if not sep:
        return None, timeout(text)
    if not name.strip():
        raise ConfigError(f"{text.strip()!r}: the stage name before '=' is empty")
    return name.strip(), timeout(value)


def stage_timeouts(values: list[str]) -> tuple[dict[str, timedelta], timedelta | None]:
    """Fold repeated --stage-timeout values (env: comma-separated) into overrides + default."""
    overrides: dict[str, timedelta] = {}
    default: timedelta | None = None
    for raw in values:
        for item in (part for part in raw.split(",") if part.strip()):
            name, value = stage_timeout(item)
            if name is None:
                default = value
            else:
                overrides[name] = value
    return overrides, default
