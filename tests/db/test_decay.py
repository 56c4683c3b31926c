"""decay (FR-002, seed T2.2): the guard, race-freedom, and SQL agreeing with the pure rules."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from support import (
    add_user,
    execute,
    rows,
    run_async,
    run_simultaneously,
    scalar,
    slow_history_inserts,
    stall_history_of,
    target_of,
)

from crontask_contract.report import RunReport, RunStatus, SkipReason
from crontask_jobs.db import open_engine
from crontask_jobs.decay_rules import UserState, compute_decay
from crontask_jobs.session import SessionLimits
from crontask_jobs.tasks import decay as decay_task
from crontask_jobs.tasks.decay import DECAY_LOCK_KEY, DecayOptions, run_decay

pytestmark = pytest.mark.db


def decay(url: URL, **kw: object) -> RunReport:
    return run_async(url, lambda e: run_decay(e, DecayOptions(**kw)))  # type: ignore[arg-type]


def age_completed_decays(sql: sa.Engine, minutes: int) -> None:
    execute(sql, "UPDATE job_executions SET"
                 " completed_at = completed_at - make_interval(mins => :m),"
                 " started_at = started_at - make_interval(mins => :m) WHERE job_name = 'decay'",
            {"m": minutes})


def test_first_call_processes_normally(db_url: URL, sql: sa.Engine) -> None:
    uid = add_user(sql, chapter=1, score=50, inactive_hours=10)  # 2 h past ch1's 8 h grace
    report = decay(db_url)
    assert report.status is RunStatus.COMPLETED
    assert report.counts == {"users_decayed": 1, "game_over": 0, "points_decayed": 2,
                             "skipped_locked": 0}
    score = scalar(sql, "SELECT relationship_score FROM users WHERE id = :id", {"id": uid})
    assert Decimal("48.39") <= score <= Decimal("48.40")
    [h] = rows(sql, "SELECT user_id, score_before, score_after, reason, execution_id"
                    " FROM score_history")
    assert (h.user_id, h.score_before, h.score_after, h.reason) == (uid, 50, score, "decay")
    assert str(h.execution_id) == report.execution_id


def test_second_call_within_window_is_skipped(db_url: URL, sql: sa.Engine) -> None:
    add_user(sql, chapter=1, score=50, inactive_hours=10)
    decay(db_url)
    report = decay(db_url)
    assert (report.status, report.reason) == (RunStatus.SKIPPED, SkipReason.RECENT_EXECUTION)
    assert scalar(sql, "SELECT count(*) FROM score_history") == 1
    statuses = [r[0] for r in rows(sql, "SELECT status FROM job_executions ORDER BY started_at")]
    assert statuses == ["completed", "skipped"]


def test_call_after_window_processes_normally(db_url: URL, sql: sa.Engine) -> None:
    uid = add_user(sql, chapter=1, score=50, inactive_hours=10)
    decay(db_url)
    age_completed_decays(sql, 51)
    # The user's clock moves back too, as if the hour had really passed.
    execute(sql, "UPDATE users SET last_decayed_at = last_decayed_at - interval '51 minutes'")
    before = scalar(sql, "SELECT relationship_score FROM users WHERE id = :id", {"id": uid})
    report = decay(db_url)
    assert report.status is RunStatus.COMPLETED
    after = scalar(sql, "SELECT relationship_score FROM users WHERE id = :id", {"id": uid})
    assert before - after == pytest.approx(Decimal("0.68"), abs=Decimal("0.02"))  # 51 min x 0.8/h


def test_window_is_configurable(db_url: URL, sql: sa.Engine) -> None:
    add_user(sql, chapter=1, score=50, inactive_hours=10)
    decay(db_url)
    age_completed_decays(sql, 20)
    assert decay(db_url, window=timedelta(minutes=30)).status is RunStatus.SKIPPED
    assert decay(db_url, window=timedelta(minutes=10)).status is RunStatus.COMPLETED


def test_forced_rerun_cannot_take_the_same_hours_twice(db_url: URL, sql: sa.Engine) -> None:
    uid = add_user(sql, chapter=2, score=80, inactive_hours=26)  # 10 h past ch2's 16 h grace
    decay(db_url)
    first = scalar(sql, "SELECT relationship_score FROM users WHERE id = :id", {"id": uid})
    assert first == pytest.approx(Decimal("74.00"), abs=Decimal("0.01"))
    age_completed_decays(sql, 120)  # defeat the window guard: a forced run
    report = decay(db_url)
    assert report.status is RunStatus.COMPLETED
    second = scalar(sql, "SELECT relationship_score FROM users WHERE id = :id", {"id": uid})
    assert first - second <= Decimal("0.01")


def test_grace_period_and_floor(db_url: URL, sql: sa.Engine) -> None:
    in_grace = add_user(sql, chapter=5, score=50, inactive_hours=71)
    near_zero = add_user(sql, chapter=1, score=1, inactive_hours=20)
    report = decay(db_url)
    assert report.counts["game_over"] == 1
    got = {r.id: r for r in rows(sql, "SELECT id, relationship_score, game_status FROM users")}
    assert got[in_grace].relationship_score == 50
    assert (got[near_zero].relationship_score, got[near_zero].game_status) == (0, "game_over")
    # A game-over user is never decayed again.
    age_completed_decays(sql, 120)
    assert decay(db_url).counts["users_decayed"] == 0


def test_an_active_user_at_zero_is_game_over(db_url: URL, sql: sa.Engine) -> None:
    """Whatever the grace: a score of 0 on an active user ends the game (another writer left
    it so; decay itself ends the game when it reaches 0)."""
    in_grace = add_user(sql, chapter=3, score=0, inactive_hours=1)
    past_grace = add_user(sql, chapter=1, score=0, inactive_hours=30)
    report = decay(db_url)
    assert report.counts["game_over"] == 2
    got = dict(rows(sql, "SELECT id, game_status FROM users"))
    assert (got[in_grace], got[past_grace]) == ("game_over", "game_over")
    assert scalar(sql, "SELECT count(*) FROM score_history") == 0  # no score changed


def test_cap_per_run(db_url: URL, sql: sa.Engine) -> None:
    uid = add_user(sql, chapter=1, score=90, inactive_hours=200)
    decay(db_url, max_decay_per_run=Decimal("3"))
    assert scalar(sql, "SELECT relationship_score FROM users WHERE id = :id", {"id": uid}) == 87


def test_sql_agrees_with_the_pure_rules(db_url: URL, sql: sa.Engine) -> None:
    cases = [(ch, score, hours, decayed)
             for ch in range(1, 6)
             for score in (0.5, 37.25, 99.99)
             for hours in (1, 9, 17, 30, 60, 100)
             for decayed in (None, 0.5, 5)]
    for ch, score, hours, decayed in cases:
        add_user(sql, chapter=ch, score=score, inactive_hours=hours, decayed_hours_ago=decayed)
    before = {r.id: r for r in rows(sql, "SELECT * FROM users")}
    decay(db_url)
    after = {r.id: r for r in rows(sql, "SELECT * FROM users")}
    now = scalar(sql, "SELECT max(created_at) FROM score_history")
    changed = 0
    for uid, b in before.items():
        expected = compute_decay(UserState(b.chapter, b.relationship_score,
                                           b.last_interaction_at, b.last_decayed_at), now)
        a = after[uid]
        if expected is None:
            assert a.relationship_score == b.relationship_score, (b, a)
            continue
        changed += 1
        assert a.relationship_score == pytest.approx(expected.score_after, abs=Decimal("0.01"))
        assert (a.game_status == "game_over") == expected.game_over
    assert changed == scalar(sql, "SELECT count(*) FROM score_history") > 50


def test_already_running_while_another_decay_holds_the_lock(db_url: URL, sql: sa.Engine) -> None:
    add_user(sql, chapter=1, score=50, inactive_hours=10)
    with sql.connect() as holder:
        holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": DECAY_LOCK_KEY})
        report = decay(db_url)
        holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": DECAY_LOCK_KEY})
    assert (report.status, report.reason) == (RunStatus.SKIPPED, SkipReason.ALREADY_RUNNING)
    assert scalar(sql, "SELECT count(*) FROM score_history") == 0
    assert decay(db_url).status is RunStatus.COMPLETED


def test_sixteen_concurrent_runs_apply_decay_once(db_url: URL, sql: sa.Engine) -> None:
    execute(sql, """INSERT INTO users (chapter, relationship_score, last_interaction_at)
                    SELECT 1 + i % 5, 60, now() - interval '100 hours'
                      FROM generate_series(1, 2000) AS i""")
    n = 16
    reports = run_simultaneously(db_url, n, lambda engine: run_decay(engine, DecayOptions()),
                                 pool_size=2)
    completed = [r for r in reports if r.status is RunStatus.COMPLETED]
    assert len(completed) == 1
    assert completed[0].counts["users_decayed"] == 2000
    assert {r.reason for r in reports if r.status is RunStatus.SKIPPED} <= {
        SkipReason.ALREADY_RUNNING, SkipReason.RECENT_EXECUTION}
    assert scalar(sql, "SELECT count(*) FROM score_history") == 2000
    assert scalar(sql, "SELECT count(DISTINCT user_id) FROM score_history") == 2000
    assert scalar(sql, "SELECT count(*) FROM job_executions WHERE status = 'completed'") == 1
    assert scalar(sql, "SELECT count(*) FROM job_executions WHERE status = 'skipped'") == n - 1


def seed_spread(sql: sa.Engine, n: int) -> None:
    """`n` users over every chapter, scores and clocks spread, many sharing one clock (so a
    range's cut falls among equal times and the id decides)."""
    execute(sql, """INSERT INTO users (chapter, relationship_score, last_interaction_at)
                    SELECT 1 + i % 5, 20 + i % 80, now() - make_interval(hours => 80 + i % 7)
                      FROM generate_series(1, :n) AS i""", {"n": n})


@pytest.mark.parametrize("workers", [2, 3])
def test_several_connections_decay_every_user_exactly_once(
        db_url: URL, sql: sa.Engine, workers: int) -> None:
    seed_spread(sql, 3000)
    before = {r.id: UserState(r.chapter, r.relationship_score, r.last_interaction_at,
                              r.last_decayed_at) for r in rows(sql, "SELECT * FROM users")}
    report = decay(db_url, chunk_size=40, workers=workers, parallel_from=0)
    assert report.status is RunStatus.COMPLETED, report
    assert report.counts["users_decayed"] == 3000
    result = scalar(sql, "SELECT result FROM job_executions WHERE status = 'completed'")
    assert result["workers"] == workers
    assert result["ranges"] > 5  # the chapters were cut, not only shared out
    assert result["chunks"] >= 3000 // 40
    per_user = dict(rows(sql, "SELECT user_id, count(*) FROM score_history GROUP BY user_id"))
    assert len(per_user) == 3000 and set(per_user.values()) == {1}
    now = datetime.fromisoformat(result["decayed_at"])
    for uid, score in rows(sql, "SELECT id, relationship_score FROM users"):
        expected = compute_decay(before[uid], now)
        assert expected is not None and score == expected.score_after, uid


def test_below_the_parallel_threshold_one_connection_walks_whole_chapters(
        db_url: URL, sql: sa.Engine) -> None:
    seed_spread(sql, 500)
    execute(sql, "ANALYZE users")
    report = decay(db_url, chunk_size=40, workers=4, parallel_from=501)
    assert report.counts["users_decayed"] == 500
    result = scalar(sql, "SELECT result FROM job_executions WHERE status = 'completed'")
    assert (result["workers"], result["ranges"]) == (1, 5)
    execute(sql, "DELETE FROM job_executions")
    execute(sql, "UPDATE users SET last_decayed_at = NULL, relationship_score = 50")
    report = decay(db_url, chunk_size=40, workers=4, parallel_from=500)
    result = scalar(sql, "SELECT result FROM job_executions WHERE status = 'completed'")
    assert report.counts["users_decayed"] == 500 and result["workers"] > 1


def test_more_workers_than_the_pool_can_lend_use_what_it_has(db_url: URL, sql: sa.Engine) -> None:
    seed_spread(sql, 600)
    report = run_async(db_url, lambda e: run_decay(e, DecayOptions(
        chunk_size=40, workers=8, parallel_from=0)), pool_size=3)
    assert report.counts["users_decayed"] == 600
    result = scalar(sql, "SELECT result FROM job_executions WHERE status = 'completed'")
    assert result["workers"] == 2  # one connection of three is kept to record the outcome


def test_users_last_seen_at_minus_infinity_are_decayed_not_a_crash(
        db_url: URL, sql: sa.Engine) -> None:
    seed_spread(sql, 300)
    execute(sql, "UPDATE users SET last_interaction_at = '-infinity' WHERE chapter = 2")
    before = dict(rows(sql, "SELECT id, relationship_score FROM users WHERE chapter = 2"))
    for workers in (1, 3):
        execute(sql, "DELETE FROM job_executions; DELETE FROM score_history;"
                     " UPDATE users SET last_decayed_at = NULL")
        execute(sql, "UPDATE users SET relationship_score = 20 + (abs(hashtext(id::text)) % 80)"
                     " WHERE chapter <> 2")
        for uid, score in before.items():
            execute(sql, "UPDATE users SET relationship_score = :s WHERE id = :id",
                    {"s": score, "id": uid})
        report = decay(db_url, chunk_size=25, workers=workers, parallel_from=0)
        assert report.status is RunStatus.COMPLETED, report
        assert report.counts["users_decayed"] == 300
        # Past grace for ever: charged the cap (10 points), like anyone past it for long.
        after = dict(rows(sql, "SELECT id, relationship_score FROM users WHERE chapter = 2"))
        assert after == {uid: score - 10 for uid, score in before.items()}


def test_when_one_connection_fails_the_others_stop_after_their_chunk(
        db_url: URL, sql: sa.Engine) -> None:
    seed_spread(sql, 6000)
    # Chunks of 10 users in ranges of about 400, each chunk at least 50 ms; one user's history
    # row waits until its session is ended.
    slow_history_inserts(sql, 0.05)
    stall_history_of(sql, scalar(sql, "SELECT id FROM users WHERE chapter = 1"
                                      " ORDER BY last_interaction_at, id OFFSET 10 LIMIT 1"))
    reports: list[RunReport] = []
    run = threading.Thread(target=lambda: reports.append(
        decay(db_url, chunk_size=10, workers=2, parallel_from=0)))
    run.start()
    try:
        pid = None
        for _ in range(300):
            pid = scalar(sql, "SELECT pid FROM pg_stat_activity"
                              " WHERE datname = current_database() AND wait_event = 'PgSleep'"
                              " AND now() - query_start > interval '0.5 s'")
            if pid:
                break
            time.sleep(0.1)
        assert pid, "the chunk of the target user never stalled"
        assert scalar(sql, "SELECT pg_terminate_backend(:pid)", {"pid": pid})
        at_failure = scalar(sql, "SELECT count(*) FROM score_history")
    finally:
        run.join(timeout=60)
    [report] = reports
    assert (report.status, report.reason) == (RunStatus.FAILED, "backend_terminated")
    decayed = report.counts["users_decayed"]
    assert decayed == scalar(sql, "SELECT count(*) FROM score_history")
    # The other connection stopped within a few chunks (10 users, 50 ms or more each) of the
    # failure, not at the end of its range of about 400.
    assert at_failure <= decayed <= at_failure + 50, (at_failure, decayed)


def test_the_lock_holder_waiting_for_the_others_is_never_idle_for_long(
        db_url: URL, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(decay_task, "KEEP_ALIVE_S", 0.3)
    limits = SessionLimits(idle_session_timeout=timedelta(seconds=1))

    async def main() -> int:
        async with open_engine(target_of(db_url), task="test", pool_size=1,
                               limits=limits) as engine, engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))
            await conn.commit()
            finished = asyncio.Event()
            asyncio.get_running_loop().call_later(2.5, finished.set)
            await decay_task._keep_alive(conn, finished)
            return int((await conn.execute(sa.text("SELECT 1"))).scalar_one())

    assert asyncio.run(main()) == 1  # with 10 s between pings the server ends it after 1 s
