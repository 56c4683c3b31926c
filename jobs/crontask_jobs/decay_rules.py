"""Decay arithmetic as a pure function; tasks/decay.py runs the same rules as one SQL statement.

A user decays for the hours elapsed since the later of (a) their last decay and (b) the end of
their chapter's grace period after their last interaction. Measuring from the last decay is
what makes a forced second run harmless: the hours it could take were already taken.
A run takes at most `cap` points; hours beyond the cap are forgiven (the clock restarts), so
an outage of the job does not wipe users out when it comes back. A score reaching 0 ends the
game. Scores are numeric(5,2): a change that rounds to nothing is not made, and the user's
clock is left alone so the fraction is not lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Final


@dataclass(frozen=True)
class ChapterRule:
    rate_per_hour: Decimal
    grace: timedelta


CHAPTER_RULES: Final = {
    1: ChapterRule(Decimal("0.8"), timedelta(hours=8)),
    2: ChapterRule(Decimal("0.6"), timedelta(hours=16)),
    3: ChapterRule(Decimal("0.4"), timedelta(hours=24)),
    4: ChapterRule(Decimal("0.3"), timedelta(hours=48)),
    5: ChapterRule(Decimal("0.2"), timedelta(hours=72)),
}
DEFAULT_MAX_DECAY_PER_RUN: Final = Decimal("10")
"""A cap per run: 12.5 h of chapter-1 decay. An hourly schedule never reaches it."""

_CENT: Final = Decimal("0.01")


@dataclass(frozen=True)
class UserState:
    chapter: int
    score: Decimal
    last_interaction_at: datetime
    last_decayed_at: datetime | None
    game_status: str = "active"


@dataclass(frozen=True)
class DecayOutcome:
    score_after: Decimal
    points: Decimal
    game_over: bool


def decay_start(user: UserState, rule: ChapterRule) -> datetime:
    grace_end = user.last_interaction_at + rule.grace
    if user.last_decayed_at is None:
        return grace_end
    return max(user.last_decayed_at, grace_end)


def compute_decay(user: UserState, now: datetime, cap: Decimal = DEFAULT_MAX_DECAY_PER_RUN,
                  rules: dict[int, ChapterRule] = CHAPTER_RULES) -> DecayOutcome | None:
    """The change decay makes to one user at `now`, or None when it makes none."""
    rule = rules.get(user.chapter)
    if rule is None or user.game_status != "active" or user.score <= 0:
        return None
    elapsed = now - decay_start(user, rule)
    if elapsed <= timedelta(0):
        return None
    hours = Decimal(elapsed.total_seconds()) / Decimal(3600)
    points = min(rule.rate_per_hour * hours, cap)
    after = max(Decimal(0), (user.score - points).quantize(_CENT, rounding=ROUND_HALF_UP))
    if after >= user.score:
        return None
    return DecayOutcome(score_after=after, points=user.score - after, game_over=after == 0)
