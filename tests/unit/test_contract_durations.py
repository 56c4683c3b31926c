"""One duration parser for the CronTask spec (operator) and the job flags (jobs)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crontask_contract.durations import (
    DURATION_PATTERN,
    MAX_DURATION,
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


@pytest.mark.parametrize(("text", "message"), [
    ("0.0000001s", "shorter than a microsecond"),
    ("0.0004ms", "shorter than a microsecond"),
    ("999999999999h", "longer than the maximum"),
    ("9" * 30, "longer than the maximum"),
    ("1" * 65 + "s", "too long"),
    ("٣s", "invalid duration"),  # a non-ASCII digit
    ("²", "invalid duration"),
    ("1_000", "invalid duration"),
])
def test_edges_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        parse_duration(text)


def test_huge_integers_are_refused() -> None:
    with pytest.raises(DurationError, match="longer than the maximum"):
        parse_duration(10**5000)


def test_the_maximum_itself_is_accepted() -> None:
    assert parse_duration(f"{MAX_DURATION.days * 24}h") == MAX_DURATION


# Invariants, for any input: parse_duration raises nothing but DurationError; what it accepts is
# at least a microsecond and at most MAX_DURATION; it is deterministic; and it is exact.

@given(st.one_of(st.text(max_size=80), st.integers(), st.booleans()))
def test_parse_never_raises_anything_else(value: str | int) -> None:
    try:
        first = parse_duration(value)
    except DurationError:
        return
    assert timedelta(microseconds=1) <= first <= MAX_DURATION
    assert parse_duration(value) == first


UNITS = {"h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000, "ms": 1_000}


@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 999),
                          st.sampled_from(sorted(UNITS))), min_size=1, max_size=4))
def test_parse_is_exact(parts: list[tuple[int, int, str]]) -> None:
    text = "".join(f"{whole}.{frac:03d}{unit}" for whole, frac, unit in parts)
    # The exact value in thousandths of a microsecond, then rounded half-even as timedelta does.
    milli_micro = sum((whole * 1000 + frac) * UNITS[unit] for whole, frac, unit in parts)
    micro, rest = divmod(milli_micro, 1000)
    micro_rounded = micro + (1 if rest > 500 or (rest == 500 and micro % 2) else 0)
    if milli_micro == 0 or micro_rounded == 0 or \
            micro_rounded > MAX_DURATION // timedelta(microseconds=1):
        with pytest.raises(DurationError):
            parse_duration(text)
    else:
        assert parse_duration(text) == timedelta(microseconds=micro_rounded)


@given(st.integers(1, MAX_DURATION // timedelta(seconds=1)))
def test_whole_seconds_round_trip_through_format(seconds: int) -> None:
    text = format_duration(seconds)
    assert re.fullmatch(DURATION_PATTERN, text), text
    assert parse_duration(text) == timedelta(seconds=seconds)
    assert duration_seconds(text) == seconds
