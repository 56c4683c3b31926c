"""The decay SQL against the pure rules, on generated users and clocks (Hypothesis, real server).

Invariants: for any set of users and any instant, one run leaves every user exactly as
`decay_rules.compute_decay` says (score, game status and clock, to the microsecond), whatever
the chunk size; and for any sequence of runs at any cadence, each user ends exactly where the
pure rules applied run by run put them, and within a cent of where one long run would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import URL
from support import execute, rows, run_async

from crontask_contract.report import RunStatus
from crontask_jobs.decay_rules import CHAPTER_RULES, UserState, compute_decay
from crontask_jobs.tasks.decay import DecayOptions, run_decay

pytestmark = pytest.mark.db

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
TINY_WINDOW = timedelta(microseconds=1)  # every run counts: the guard is tested elsewhere
DB_EXAMPLES = settings(max_examples=25, suppress_health_check=[
    HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@dataclass(frozen=True)
class Seed:
    chapter: int
    score_cents: int
    inactive_s: int
    decayed_s: int | None
    status: str


SEEDS = st.builds(
    Seed,
    chapter=st.sampled_from(sorted(CHAPTER_RULES)),
    score_cents=st.one_of(st.integers(0, 10_000), st.sampled_from([0, 1, 2, 99, 10_000])),
    inactive_s=st.integers(0, 400 * 3600),
    decayed_s=st.none() | st.integers(0, 200 * 3600),
    status=st.sampled_from(["active"] * 9 + ["game_over"]),
)


def state(seed: Seed) -> UserState:
    return UserState(seed.chapter, Decimal(seed.score_cents) / 100,
                     NOW - timedelta(seconds=seed.inactive_s),
                     None if seed.decayed_s is None else NOW - timedelta(seconds=seed.decayed_s),
                     seed.status)


def reset(sql: sa.Engine, seeds: list[Seed]) -> list[tuple[object, UserState]]:
    execute(sql, "TRUNCATE users, score_history, job_executions CASCADE")
    out = []
    for seed in seeds:
        s = state(seed)
        [row] = rows(sql, """
            INSERT INTO users (chapter, relationship_score, last_interaction_at,
                               last_decayed_at, game_status)
            VALUES (:c, :s, :i, :d, :g) RETURNING id""",
                     {"c": s.chapter, "s": s.score, "i": s.last_interaction_at,
                      "d": s.last_decayed_at, "g": s.game_status})
        out.append((row.id, s))
    return out


def current(sql: sa.Engine) -> dict[object, UserState]:
    return {r.id: UserState(r.chapter, r.relationship_score, r.last_interaction_at,
                            r.last_decayed_at, r.game_status)
            for r in rows(sql, "SELECT * FROM users")}


def expected_after(s: UserState, now: datetime, cap: Decimal) -> UserState:
    out = compute_decay(s, now, cap)
    if out is None:
        return s
    return UserState(s.chapter, out.score_after, s.last_interaction_at, out.decayed_until,
                     "game_over" if out.game_over else s.game_status)


def decay_at(url: URL, now: datetime, cap: Decimal, chunk: int) -> None:
    report = run_async(url, lambda e: run_decay(
        e, DecayOptions(window=TINY_WINDOW, max_decay_per_run=cap, chunk_size=chunk), now=now),
        pool_size=2)
    assert report.status is RunStatus.COMPLETED, report


@DB_EXAMPLES
@given(st.lists(SEEDS, min_size=1, max_size=25), st.integers(1, 2000),
       st.sampled_from([1, 3, 5000]))
def test_one_run_is_exactly_the_pure_rules(db_url: URL, sql: sa.Engine, seeds: list[Seed],
                                           cap_cents: int, chunk: int) -> None:
    users = reset(sql, seeds)
    cap = Decimal(cap_cents) / 100
    decay_at(db_url, NOW, cap, chunk)
    got = current(sql)
    for uid, before in users:
        assert got[uid] == expected_after(before, NOW, cap), (before, got[uid])
    history = rows(sql, "SELECT user_id, score_before, score_after FROM score_history")
    assert len(history) == sum(got[uid].score < before.score for uid, before in users)


@DB_EXAMPLES
@given(st.lists(SEEDS, min_size=1, max_size=8),
       st.lists(st.integers(1, 4 * 3600), min_size=1, max_size=12))
def test_runs_at_any_cadence_charge_what_one_run_charges(
        db_url: URL, sql: sa.Engine, seeds: list[Seed], gaps: list[int]) -> None:
    users = reset(sql, seeds)
    cap = Decimal(100)  # a cap that one long run would also never reach
    model = dict(users)
    t = NOW
    for gap in gaps:
        t += timedelta(seconds=gap)
        decay_at(db_url, t, cap, chunk=3)
        model = {uid: expected_after(s, t, cap) for uid, s in model.items()}
    got = current(sql)
    for uid, before in users:
        assert got[uid] == model[uid]
        once = expected_after(before, t, cap)
        assert abs(got[uid].score - once.score) <= Decimal("0.01"), (before, gaps)
