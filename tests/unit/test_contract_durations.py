"""One duration parser for the CronTask spec (operator) and the job flags (jobs)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from crontask_contract.durations import (
    DURATION_PATTERN,
    DurationError,
    duration_seconds,
    format_duration,
    parse_duration,
)


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2h", 7200), ("90", 90), ("1.5h", 5400),
    ("250ms", 0.25), ("1h0m5s", 3605), (" 15m ", 900),
])
def test_parses(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0", "0s", "-5m", "5 m", "5x", "m5", "1h-5m", "abc", "5m3",
                                  "1d"])
def test_rejects(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_format_round_trips() -> None:
    for text in ("1h30m", "45s", "2h", "1h1m1s"):
        assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(("value", "seconds"), [("90s", 90), ("1h30m", 5400), (60, 60),
                                                ("250ms", 1), ("45", 45)])
def test_whole_seconds_round_up(value: str | int, seconds: int) -> None:
    assert duration_seconds(value) == seconds


@pytest.mark.parametrize("value", [0, -5, True])
def test_rejects_non_positive_and_non_numbers(value: int) -> None:
    with pytest.raises(DurationError):
        duration_seconds(value)


def test_every_schema_spelling_parses_and_round_trips() -> None:
    """What the CRD admits, the job parses to the same number of seconds."""
    for seconds in (1, 59, 60, 90, 3600, 5400, 86399):
        text = format_duration(seconds)
        assert re.fullmatch(DURATION_PATTERN, text), text
        assert duration_seconds(text) == seconds
