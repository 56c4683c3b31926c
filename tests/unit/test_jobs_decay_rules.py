"""The decay arithmetic as a pure function (tests/db/test_decay.py checks the SQL agrees)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from crontask_jobs.decay_rules import (
    CHAPTER_RULES,
    DecayOutcome,
    UserState,
    compute_decay,
    decay_start,
)

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


def test_only_active_users_decay() -> None:
    assert compute_decay(user(1, inactive_h=100, status="game_over"), NOW) is None


def test_an_active_user_at_zero_is_game_over_whatever_the_grace() -> None:
    for inactive_h in (0, 100):
        out = compute_decay(user(3, score="0", inactive_h=inactive_h, decayed_h=2), NOW)
        assert out == DecayOutcome(Decimal(0), Decimal(0), True, NOW - timedelta(hours=2))


def test_the_clock_moves_by_the_time_charged() -> None:
    # 0.8/h for 100 s is 0.0222 points: 2 cents are charged, for exactly 90 s of the 100.
    out = compute_decay(user(1, inactive_h=8 + 100 / 3600), NOW)
    assert out is not None
    assert out.points == Decimal("0.02")
    assert out.decayed_until == NOW - timedelta(seconds=10)
    # Less than a cent is not charged, and the clock does not move.
    assert compute_decay(user(1, inactive_h=30, decayed_h=40 / 3600), NOW) is None


def test_a_92_second_cadence_charges_what_is_due() -> None:
    """The regression: rounding each run up (or moving the clock to now) charged a chapter-5
    user about twice what was due at this cadence."""
    state = user(5, score="50", inactive_h=72)
    for k in range(1, 400):
        now = NOW + timedelta(seconds=92 * k)
        out = compute_decay(state, now)
        if out is not None:
            state = UserState(5, out.score_after, state.last_interaction_at, out.decayed_until)
    due = Decimal("0.2") * Decimal(92 * 399) / 3600  # 2.04 points
    assert due - Decimal("0.01") < Decimal(50) - state.score <= due


def test_the_cap_forgives_the_rest_and_restarts_the_clock() -> None:
    out = compute_decay(user(1, score="90", inactive_h=500), NOW, cap=Decimal("10"))
    assert out is not None
    assert (out.points, out.decayed_until) == (Decimal(10), NOW)


# Invariants, for any active user, clock and cap: the score never rises nor leaves [0, 100];
# whole cents are charged; the clock never passes `now` and, unless the cap or the end of the
# game restarted it, moves by exactly the time charged; and any sequence of runs charges what
# one long run charges, to within a cent.

CHAPTERS = st.sampled_from(sorted(CHAPTER_RULES))
SCORES = st.integers(0, 10_000).map(lambda c: Decimal(c) / 100)
HOURS = st.floats(0, 2000, allow_nan=False)


@given(CHAPTERS, SCORES, HOURS, st.none() | HOURS, st.integers(1, 10_000))
def test_decay_invariants(chapter: int, score: Decimal, inactive_h: float,
                          decayed_h: float | None, cap_cents: int) -> None:
    state = UserState(chapter, score, NOW - timedelta(hours=inactive_h),
                      None if decayed_h is None else NOW - timedelta(hours=decayed_h))
    cap = Decimal(cap_cents) / 100
    out = compute_decay(state, NOW, cap)
    if out is None:
        return
    assert Decimal(0) <= out.score_after <= score
    assert out.points == score - out.score_after
    assert out.points == out.points.quantize(Decimal("0.01"))
    assert out.points <= cap or score == 0
    assert out.game_over == (out.score_after == 0)
    if score == 0:
        return
    assert out.decayed_until is not None
    assert out.decayed_until <= NOW
    rule = CHAPTER_RULES[chapter]
    start = decay_start(state, rule)
    if out.decayed_until != NOW:
        charged_us = out.points * 36_000_000 / rule.rate_per_hour * 100
        assert (out.decayed_until - start) // timedelta(microseconds=1) == int(charged_us)


@given(CHAPTERS, st.lists(st.integers(1, 7200), min_size=1, max_size=60))
def test_many_runs_charge_what_one_run_charges(chapter: int, gaps: list[int]) -> None:
    rule = CHAPTER_RULES[chapter]
    first = UserState(chapter, Decimal(100), NOW - rule.grace, None)
    state, t = first, NOW
    for gap in gaps:
        t += timedelta(seconds=gap)
        out = compute_decay(state, t, cap=Decimal(100))
        if out is not None:
            state = UserState(chapter, out.score_after, state.last_interaction_at,
                              out.decayed_until)
    once = compute_decay(first, t, cap=Decimal(100))
    once_score = Decimal(100) if once is None else once.score_after
    assert abs(state.score - once_score) <= Decimal("0.01")


def test_rounds_to_cents() -> None:
    out = compute_decay(user(3, score="50", inactive_h=24 + 1 / 3), NOW)  # 0.4 x 20 min
    assert out is not None
    assert out.score_after == Decimal("49.87")
