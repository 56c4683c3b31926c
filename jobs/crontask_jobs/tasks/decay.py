"""decay (FR-002): hourly score decay for inactive users, applied exactly once per window.

The guard is a session-level advisory lock taken before anything else and held for the whole
run, on a connection of its own. Under it, "is there a recent completed decay?" and "start a
decay" cannot interleave with another run's, which a check-then-insert (the seed's approach,
and Oban OSS's lock-plus-lookup) cannot promise. A run that cannot take the lock is skipped as
`already_running`; because the lock belongs to the session, a killed pod releases it at once,
instead of blocking decay until a stale row is cleaned up. (It needs a session-pooled or direct
connection: behind PgBouncer in transaction mode a session lock is meaningless.)

The arithmetic is the pure `decay_rules.compute_decay`, expressed as one set-based statement:
rules as a VALUES list joined to users, one UPDATE, one INSERT into score_history, in the same
transaction that marks the execution completed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crontask_contract.report import RunReport, RunStatus, SkipReason
from crontask_jobs.decay_rules import CHAPTER_RULES, DEFAULT_MAX_DECAY_PER_RUN
from crontask_jobs.repositories import JobExecutionRepository
from crontask_jobs.tasks.common import TaskFailed, close_failed, utc_now

log = logging.getLogger(__name__)

JOB_NAME: Final = "decay"
DEFAULT_WINDOW: Final = timedelta(minutes=50)
DECAY_LOCK_KEY: Final = 0x6372_6F6E_6465_63  # "crondec"


@dataclass(frozen=True)
class DecayOptions:
    window: timedelta = DEFAULT_WINDOW
    max_decay_per_run: Decimal = DEFAULT_MAX_DECAY_PER_RUN


def _rules_values() -> str:
    return ", ".join(
        f"({chapter}, {rule.rate_per_hour}::numeric, "
        f"interval '{int(rule.grace.total_seconds())} seconds')"
        for chapter, rule in sorted(CHAPTER_RULES.items())
    )


DECAY_SQL: Final = sa.text(f"""
WITH rules (chapter, rate, grace) AS (VALUES {_rules_values()}),
candidates AS (
    SELECT u.id,
           u.relationship_score AS score_before,
           LEAST(CAST(:cap AS numeric),
                 r.rate * EXTRACT(EPOCH FROM now() - GREATEST(
                     u.last_interaction_at + r.grace,
                     COALESCE(u.last_decayed_at, '-infinity'::timestamptz))) / 3600
           ) AS points
      FROM users AS u
      JOIN rules AS r ON r.chapter = u.chapter
     WHERE u.game_status = 'active'
       AND u.relationship_score > 0
       AND u.last_interaction_at < now() - r.grace
       AND (u.last_decayed_at IS NULL OR u.last_decayed_at < now())
       FOR UPDATE OF u
),
computed AS (
    SELECT id, score_before, GREATEST(0, ROUND(score_before - points, 2)) AS score_after
      FROM candidates
     WHERE points > 0
),
changed AS (
    UPDATE users AS u
       SET relationship_score = c.score_after,
           last_decayed_at = now(),
           updated_at = now(),
           game_status = CASE WHEN c.score_after = 0 THEN 'game_over' ELSE u.game_status END
      FROM computed AS c
     WHERE u.id = c.id
       AND c.score_after < c.score_before
    RETURNING u.id, c.score_before, c.score_after
),
history AS (
    INSERT INTO score_history (user_id, score_before, score_after, reason, execution_id)
    SELECT id, score_before, score_after, 'decay', :execution_id FROM changed
    RETURNING score_before, score_after
)
SELECT count(*) AS users_decayed,
       count(*) FILTER (WHERE score_after = 0) AS game_over,
       COALESCE(sum(score_before - score_after), 0) AS points_decayed
  FROM history
""")


def _skipped(reason: SkipReason, execution_id: uuid.UUID, started: str) -> RunReport:
    log.info("decay skipped: %s", reason)
    return RunReport(task=JOB_NAME, status=RunStatus.SKIPPED, reason=str(reason),
                     execution_id=str(execution_id), started_at=started, finished_at=utc_now())


async def run_decay(engine: AsyncEngine, options: DecayOptions) -> RunReport:
    started = utc_now()
    async with engine.connect() as conn:
        locked = (await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                     {"k": DECAY_LOCK_KEY})).scalar_one()
        await conn.commit()
        if not locked:
            skip_id = await JobExecutionRepository(conn).record_skip(
                JOB_NAME, SkipReason.ALREADY_RUNNING)
            await conn.commit()
            return _skipped(SkipReason.ALREADY_RUNNING, skip_id, started)
        try:
            return await _decay_locked(engine, conn, options, started)
        finally:
            await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": DECAY_LOCK_KEY})
            await conn.commit()


async def _decay_locked(engine: AsyncEngine, conn: AsyncConnection,
                        options: DecayOptions, started: str) -> RunReport:
    repo = JobExecutionRepository(conn)
    if await repo.has_recent_execution(JOB_NAME, options.window):
        skip_id = await repo.record_skip(JOB_NAME, SkipReason.RECENT_EXECUTION)
        await conn.commit()
        return _skipped(SkipReason.RECENT_EXECUTION, skip_id, started)
    execution_id = await repo.start(JOB_NAME)
    await conn.commit()
    try:
        row = (await conn.execute(DECAY_SQL, {"cap": options.max_decay_per_run,
                                              "execution_id": execution_id})).one()
        counts = {"users_decayed": int(row.users_decayed), "game_over": int(row.game_over),
                  "points_decayed": round(row.points_decayed)}
        result = {**counts, "points_decayed_exact": str(row.points_decayed),
                  "max_decay_per_run": str(options.max_decay_per_run)}
        await repo.finish(execution_id, "completed", result)
        await conn.commit()
    except Exception as exc:
        await conn.rollback()
        await close_failed(engine, execution_id, f"{type(exc).__name__}: {exc}")
        raise TaskFailed(f"decay failed: {type(exc).__name__}", execution_id, exc) from exc
    log.info("decay: %d user(s) decayed by %s point(s) in total, %d game over",
             counts["users_decayed"], row.points_decayed, counts["game_over"])
    return RunReport(task=JOB_NAME, status=RunStatus.COMPLETED, execution_id=str(execution_id),
                     started_at=started, finished_at=utc_now(), counts=counts)
