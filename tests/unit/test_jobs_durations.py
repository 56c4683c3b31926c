from __future__ import annotations

from datetime import timedelta

import pytest
from crontask_jobs.durations import DurationError, format_duration, parse_duration


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
