"""Decay arithmetic as a pure function; tasks/decay.py runs the same rules in SQL.

A user decays for the time elapsed since the later of (a) their decay clock (`last_decayed_at`)
and (b) the end of their chapter's grace period after their last interaction. Measuring from
the clock is what makes a forced second run harmless: the time it could charge was charged.

Scores are numeric(5,2), so a run charges whole cents, rounded *down*, and moves the user's
clock by exactly the time those cents stand for (`cents / rate`), not to the run's time: the
fraction of a cent not charged stays on the clock for the next run. However often decay runs,
the total charged is what one long run would charge, to within a cent (rounding up, or moving
the clock to "now", would charge a chapter-5 user at a 92-second cadence about twice what is
due). Two cases move the clock to the run's time instead: a run that reaches its cap (`cap`
points; the rest of the elapsed time is forgiven, so an outage does not wipe users out) and a
run that ends the game (the score reached 0). An active user whose score is already 0 is out
of the game: decay sets `game_over` without a score change, whatever their chapter or grace.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
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

MIN_MAX_DECAY_PER_RUN: Final = Decimal("0.01")
"""A cap below one cent could never charge anything."""

_CENT: Final = Decimal("0.01")
_MICROSECOND: Final = timedelta(microseconds=1)
_SECONDS_PER_CENT_HOUR: Final = 36
"""points = rate * hours, so cents = rate * seconds / 36."""
_MICROSECONDS_PER_CENT_HOUR: Final = 36_000_000


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
    """What this run charges: a whole number of cents."""
    game_over: bool
    decayed_until: datetime | None
    """The user's new clock (`last_decayed_at`); None leaves it as it was."""


def decay_start(user: UserState, rule: ChapterRule) -> datetime:
    grace_end = user.last_interaction_at + rule.grace
    if user.last_decayed_at is None:
        return grace_end
    return max(user.last_decayed_at, grace_end)


def cents(points: Decimal) -> int:
    """Whole cents, rounded down."""
    return int((points * 100) // 1)


def compute_decay(user: UserState, now: datetime, cap: Decimal = DEFAULT_MAX_DECAY_PER_RUN,
                  rules: dict[int, ChapterRule] = CHAPTER_RULES) -> DecayOutcome | None:
    """The change decay makes to one user at `now`, or None when it makes none."""
    if user.game_status != "active":
        return None
    if user.score <= 0:
        return DecayOutcome(Decimal("0.00"), Decimal("0.00"), True, user.last_decayed_at)
    rule = rules.get(user.chapter)
    if rule is None:
        return None
    start = decay_start(user, rule)
    if now <= start:
        return None
    elapsed_s = Decimal((now - start) // _MICROSECOND) / 1_000_000
    due = int((rule.rate_per_hour * elapsed_s) // _SECONDS_PER_CENT_HOUR)
    cap_cents = cents(cap)
    score_cents = cents(user.score)
    charged = min(due, cap_cents, score_cents)
    if charged <= 0:
        return None
    game_over = charged == score_cents
    if game_over or due > cap_cents:
        until = now
    else:
        advance = int((charged * _MICROSECONDS_PER_CENT_HOUR) // rule.rate_per_hour)
        until = start + advance * _MICROSECOND
    return DecayOutcome(score_after=(Decimal(score_cents - charged) / 100).quantize(_CENT),
                        points=(Decimal(charged) / 100).quantize(_CENT), game_over=game_over,
                        decayed_until=until)
