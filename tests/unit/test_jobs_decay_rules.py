"""The decay arithmetic as a pure function (tests/db/test_decay.py checks the SQL agrees)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from crontask_jobs.decay_rules import CHAPTER_RULES, UserState, compute_decay

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def user(chapter: int = 1, score: str = "50", inactive_h: float = 0,
         decayed_h: float | None = None, status: str = "active") -> UserState:
    return UserState(chapter, Decimal(score), NOW - timedelta(hours=inactive_h),
                     None if decayed_h is None else NOW - timedelta(hours=decayed_h), status)


def test_chapter_rates_and_grace_periods() -> None:
    for chapter, rule in CHAPTER_RULES.items():
        grace_h = rule.grace.total_seconds() / 3600
        assert compute_decay(user(chapter, inactive_h=grace_h - 0.5), NOW) is None
        out = compute_decay(user(chapter, inactive_h=grace_h + 2), NOW)
        assert out is not None
        assert out.points == rule.rate_per_hour * 2


def test_measured_from_the_later_of_last_decay_and_grace_end() -> None:
    # Decayed 1 h ago, grace ended 10 h ago: only the last hour counts.
    out = compute_decay(user(1, inactive_h=18, decayed_h=1), NOW)
    assert out is not None
    assert out.points == Decimal("0.80")
    # Decayed 5 h ago but interacted since: grace end (1 h ago) is later.
    out = compute_decay(user(1, inactive_h=9, decayed_h=5), NOW)
    assert out is not None
    assert out.points == Decimal("0.80")


def test_a_rerun_right_after_a_decay_takes_nothing() -> None:
    assert compute_decay(user(1, inactive_h=30, decayed_h=0), NOW) is None
    # Less than half a cent of decay is not taken (and the clock is left alone).
    assert compute_decay(user(1, inactive_h=30, decayed_h=0.005), NOW) is None


def test_cap_and_floor() -> None:
    out = compute_decay(user(1, score="90", inactive_h=500), NOW, cap=Decimal("10"))
    assert out is not None
    assert out.score_after == Decimal("80.00")
    out = compute_decay(user(1, score="3", inactive_h=20), NOW)
    assert out is not None
    assert (out.score_after, out.game_over, out.points) == (Decimal(0), True, Decimal(3))


def test_only_active_users_with_points_decay() -> None:
    assert compute_decay(user(1, inactive_h=100, status="game_over"), NOW) is None
    assert compute_decay(user(1, score="0", inactive_h=100), NOW) is None


def test_rounds_to_cents() -> None:
    out = compute_decay(user(3, score="50", inactive_h=24 + 1 / 3), NOW)  # 0.4 x 20 min
    assert out is not None
    assert out.score_after == Decimal("49.87")
