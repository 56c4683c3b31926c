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

from crontask_contract.durations import DurationError, parse_duration

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


def positive_int(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError as exc:
        raise ConfigError(f"{text!r} is not an integer") from exc
    if value <= 0:
        raise ConfigError(f"{text!r} must be a positive integer")
    return value


def points(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ConfigError(f"{text!r} is not a number") from exc
    if not value.is_finite() or value <= 0 or value > 100:
        raise ConfigError(f"{text!r} must be a number of points in (0, 100]")
    return value


def log_level(text: str) -> int:
    name = text.strip().upper()
    if name not in LOG_LEVELS:
        raise ConfigError(f"{text!r} is not a log level ({', '.join(LOG_LEVELS)})")
    return int(logging.getLevelName(name))


def log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_FORMATS:
        raise ConfigError(f"{text!r} is not a log format ({', '.join(LOG_FORMATS)})")
    return value


def stage_timeout(text: str) -> tuple[str | None, timedelta]:
    """`DUR` (the default for every stage) or `STAGE=DUR`."""
    name, sep, value = text.partition("=")
    if not sep:
        return None, duration(text)
    if not name.strip():
        raise ConfigError(f"{text!r}: the stage name before '=' is empty")
    return name.strip(), duration(value)


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
