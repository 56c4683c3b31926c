"""decay (FR-002): hourly score decay for inactive users, applied exactly once per window.

**Guard.** A session-level advisory lock, taken before anything else and held for the whole
run on the connection that does the work. Under it, "is there a recent completed decay?" and
"start a decay" cannot interleave with another run's, which a check-then-insert (the seed's
approach, and Oban OSS's lock-plus-lookup) cannot promise. A run that cannot take the lock is
skipped as `already_running`; because the lock belongs to the session, a killed pod releases it
at once (a frozen one when the server's idle_session_timeout ends its session). (It needs a
session-pooled or direct connection: behind PgBouncer in transaction mode it means nothing.)

**Chunks.** The rules (`decay_rules`, one pure function) run as one set-based statement per
chunk of at most `chunk_size` users, each its own short transaction, walking one chapter at a
time along the index `users_decay_keyset_idx (chapter, last_interaction_at, id) WHERE
game_status = 'active'` (keyset pagination: no OFFSET, no row set held in Python). No user row
is locked longer than one chunk, whatever the table size, so a pipeline's `touch_user` waits
at most that long. A user locked by someone else is skipped (`FOR NO KEY UPDATE SKIP LOCKED`)
and counted in `skipped_locked`: decay is measured from each user's own clock, so the next run
charges exactly the time this one did not, and a run that dies midway loses nothing either
(the next one decays the rest, and the users it already did have nothing left to charge).
Every chunk uses the same instant (`now` of the run's first statement), so the run means one
moment whatever its length.

**Chunk size.** 5,000 users: a chunk of the default rules writes about 30-40k rows per second
on two cores, so one holds its locks for about 0.15 s, and the per-chunk cost (one round trip,
planning) stays under 1% of the run at 1M users (200 chunks).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crontask_contract.report import RunReport, RunStatus, SkipReason
from crontask_jobs.db import connection
from crontask_jobs.decay_rules import CHAPTER_RULES, DEFAULT_MAX_DECAY_PER_RUN, cents
from crontask_jobs.faults import Fault, classify
from crontask_jobs.repositories import JobExecutionRepository
from crontask_jobs.tasks.common import TERMINATED, execution_result, retrying, utc_now

log = logging.getLogger(__name__)

JOB_NAME: Final = "decay"
DEFAULT_WINDOW: Final = timedelta(minutes=50)
DEFAULT_CHUNK_SIZE: Final = 5000
DECAY_LOCK_KEY: Final = 0x6372_6F6E_6465_63  # "crondec"
_FIRST_KEY: Final = ("-infinity", "00000000-0000-0000-0000-000000000000")


@dataclass(frozen=True)
class DecayOptions:
    window: timedelta = DEFAULT_WINDOW
    max_decay_per_run: Decimal = DEFAULT_MAX_DECAY_PER_RUN
    chunk_size: int = DEFAULT_CHUNK_SIZE


# One chunk. `page` walks the keyset index without locking (it only decides where the chunk
# ends); `locked` takes the rows of the page that still qualify, skipping (not waiting for)
# rows another session holds: lock policy SKIP LOCKED, because a locked user is being touched
# by a pipeline, and elapsed-time decay makes skipping exact (the next run charges it all).
# NO KEY UPDATE, not UPDATE: decay changes no key, and the weaker lock does not block the
# foreign-key checks (KEY SHARE on the user) of a pipeline changing the user's conversation.
# The cents are rounded down and the clock moves by the time charged (decay_rules).
DECAY_CHUNK: Final = sa.text("""
WITH page AS (
    SELECT id, last_interaction_at, relationship_score > 0 AS positive
      FROM users
     WHERE game_status = 'active'
       AND chapter = :chapter
       AND last_interaction_at < CAST(:now AS timestamptz) - make_interval(secs => :grace_s)
       AND (last_interaction_at, id) > (CAST(:after_t AS timestamptz), CAST(:after_id AS uuid))
     ORDER BY last_interaction_at, id
     LIMIT :chunk
),
locked AS (
    SELECT u.ctid AS row_id, u.id, u.relationship_score, u.last_interaction_at,
           u.last_decayed_at
      FROM users AS u
     WHERE u.id = ANY (ARRAY(SELECT id FROM page))
       AND u.game_status = 'active'
       AND u.chapter = :chapter
       AND u.relationship_score > 0
       AND u.last_interaction_at < CAST(:now AS timestamptz) - make_interval(secs => :grace_s)
       FOR NO KEY UPDATE OF u SKIP LOCKED
),
timed AS (
    SELECT row_id, id, relationship_score AS score_before, relationship_score * 100 AS score_cents,
           GREATEST(last_interaction_at + make_interval(secs => :grace_s),
                    COALESCE(last_decayed_at, '-infinity')) AS start
      FROM locked
),
due AS (
    SELECT row_id, id, score_before, score_cents, start,
           div(CAST(:rate AS numeric) * (EXTRACT(EPOCH FROM CAST(:now AS timestamptz))
                                         - EXTRACT(EPOCH FROM start)), 36) AS due_cents
      FROM timed
     WHERE start < CAST(:now AS timestamptz)
),
charged AS (
    SELECT row_id, id, score_before, score_cents, start, due_cents,
           LEAST(due_cents, CAST(:cap_cents AS numeric), score_cents) AS cents
      FROM due
),
outcome AS (
    SELECT row_id, id, score_before,
           CAST((score_cents - cents) / 100 AS numeric(5, 2)) AS score_after,
           CASE WHEN cents = score_cents OR due_cents > CAST(:cap_cents AS numeric)
                THEN CAST(:now AS timestamptz)
                ELSE start + interval '1 microsecond'
                             * CAST(div(cents * 36000000, CAST(:rate AS numeric)) AS float8)
           END AS decayed_until
      FROM charged
     WHERE cents > 0
),
changed AS (
    UPDATE users AS u
       SET relationship_score = o.score_after,
           last_decayed_at = o.decayed_until,
           updated_at = now(),
           game_status = CASE WHEN o.score_after = 0 THEN 'game_over' ELSE u.game_status END
      FROM outcome AS o
     WHERE u.ctid = o.row_id  -- the version locked above: found without an index lookup
       AND u.id = o.id
    RETURNING u.id, o.score_before, o.score_after
),
history AS (
    INSERT INTO score_history (user_id, score_before, score_after, reason, execution_id)
    SELECT id, score_before, score_after, 'decay', :execution_id FROM changed
    RETURNING score_before, score_after
)
SELECT (SELECT count(*) FROM page) AS page_rows,
       (SELECT last_interaction_at FROM page
         ORDER BY last_interaction_at DESC, id DESC LIMIT 1) AS last_t,
       (SELECT id FROM page ORDER BY last_interaction_at DESC, id DESC LIMIT 1) AS last_id,
       (SELECT count(*) FROM page WHERE positive) - (SELECT count(*) FROM locked) AS skipped,
       (SELECT count(*) FROM history) AS decayed,
       (SELECT count(*) FROM history WHERE score_after = 0) AS game_over,
       (SELECT COALESCE(sum(score_before - score_after), 0) FROM history) AS points
""")

# Active users already at 0 are out of the game, whatever their chapter or grace. They are
# found by a scan (normally there are none: decay ends the game when it reaches 0; only other
# writers leave such users), in chunks, each its own transaction. Lock policy: SKIP LOCKED,
# as above; `remaining` (seen in the statement's snapshot) minus `ended` is what was skipped.
END_ZERO_SCORES: Final = sa.text("""
WITH zero AS (
    SELECT id FROM users
     WHERE game_status = 'active' AND relationship_score = 0
     LIMIT :chunk
       FOR NO KEY UPDATE SKIP LOCKED
),
ended AS (
    UPDATE users AS u
       SET game_status = 'game_over', updated_at = now()
      FROM zero
     WHERE u.id = zero.id
    RETURNING u.id
)
SELECT (SELECT count(*) FROM ended) AS ended,
       (SELECT count(*) FROM users
         WHERE game_status = 'active' AND relationship_score = 0) AS remaining
""")


@dataclass
class Progress:
    """What the committed chunks of a run did so far."""

    decayed: int = 0
    game_over: int = 0
    points: Decimal = field(default_factory=Decimal)
    skipped: int = 0
    chunks: int = 0

    def counts(self) -> dict[str, int]:
        return {"users_decayed": self.decayed, "game_over": self.game_over,
                "points_decayed": round(self.points), "skipped_locked": self.skipped}


async def decay_all(conn: AsyncConnection, options: DecayOptions, now: datetime,
                    execution_id: uuid.UUID, progress: Progress) -> None:
    """Every chunk of every chapter, then the active users at 0; one transaction each."""
    cap_cents = cents(options.max_decay_per_run)
    for chapter, rule in sorted(CHAPTER_RULES.items()):
        after: tuple[Any, Any] = _FIRST_KEY
        while True:
            async with conn.begin():
                row = (await conn.execute(DECAY_CHUNK, {
                    "chapter": chapter, "rate": rule.rate_per_hour,
                    "grace_s": rule.grace.total_seconds(), "cap_cents": cap_cents,
                    "now": now, "after_t": after[0], "after_id": after[1],
                    "chunk": options.chunk_size, "execution_id": execution_id})).one()
            progress.chunks += 1
            progress.decayed += row.decayed
            progress.game_over += row.game_over
            progress.points += row.points
            progress.skipped += row.skipped
            if row.page_rows < options.chunk_size:
                break
            after = (row.last_t, row.last_id)
    while True:
        async with conn.begin():
            row = (await conn.execute(END_ZERO_SCORES, {"chunk": options.chunk_size})).one()
        progress.game_over += row.ended
        if row.ended < options.chunk_size:
            progress.skipped += row.remaining - row.ended
            break


async def run_decay(engine: AsyncEngine, options: DecayOptions,
                    now: datetime | None = None) -> RunReport:
    """One decay run. `now` fixes the run's instant (tests); by default the server's."""
    started = utc_now()
    async with connection(engine) as conn:
        locked = (await conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                                     {"k": DECAY_LOCK_KEY})).scalar_one()
        await conn.commit()
        if not locked:
            return await _skip(conn, SkipReason.ALREADY_RUNNING, started)
        try:
            return await _decay_locked(engine, conn, options, started, now)
        finally:
            await _unlock(conn)


async def _unlock(conn: AsyncConnection) -> None:
    try:
        await conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": DECAY_LOCK_KEY})
        await conn.commit()
    except Exception as exc:  # a broken session has released its locks already
        log.debug("decay lock release: %s", type(exc).__name__)


async def _skip(conn: AsyncConnection, reason: SkipReason, started: str) -> RunReport:
    log.info("decay skipped: %s", reason)
    report = RunReport(task=JOB_NAME, status=RunStatus.SKIPPED, reason=str(reason),
                       started_at=started, finished_at=utc_now())
    async with conn.begin():
        skip_id = await JobExecutionRepository(conn).record_skip(
            JOB_NAME, execution_result(report))
    return RunReport(task=JOB_NAME, status=RunStatus.SKIPPED, reason=str(reason),
                     execution_id=str(skip_id), started_at=started,
                     finished_at=report.finished_at)


async def _decay_locked(engine: AsyncEngine, conn: AsyncConnection, options: DecayOptions,
                        started: str, now: datetime | None) -> RunReport:
    repo = JobExecutionRepository(conn)
    async with conn.begin():
        recent = await repo.has_recent_execution(JOB_NAME, options.window)
    if recent:
        return await _skip(conn, SkipReason.RECENT_EXECUTION, started)
    async with conn.begin():
        execution_id = await repo.start(JOB_NAME)
        at = now or (await conn.execute(sa.text("SELECT now()"))).scalar_one()
    progress = Progress()
    fault: Fault | None = None
    try:
        await decay_all(conn, options, at, execution_id, progress)
    except asyncio.CancelledError:
        fault = Fault(TERMINATED, "the run was terminated (SIGTERM) between or during chunks")
    except Exception as exc:
        fault = classify(exc)
    report = _report(execution_id, started, progress, fault)
    details = {"points_decayed_exact": str(progress.points), "chunks": progress.chunks,
               "max_decay_per_run": str(options.max_decay_per_run),
               "decayed_at": at.astimezone(UTC).isoformat()}

    async def close(c: AsyncConnection) -> None:
        async with c.begin():
            await JobExecutionRepository(c).finish(execution_id, str(report.status),
                                                   execution_result(report, **details),
                                                   report.error)

    closed = await retrying(engine, close, budget_s=10 if fault else 30)
    if isinstance(closed, Fault) and fault is None:
        report = _report(execution_id, started, progress, closed, recorded=False)
    _log_summary(report, progress)
    return report


def _report(execution_id: uuid.UUID, started: str, progress: Progress, fault: Fault | None,
            *, recorded: bool = True) -> RunReport:
    if fault is None:
        return RunReport(task=JOB_NAME, status=RunStatus.COMPLETED,
                         execution_id=str(execution_id), started_at=started,
                         finished_at=utc_now(), counts=progress.counts())
    if recorded:
        error = (f"decay failed after {progress.chunks} chunk(s), {progress.decayed} user(s)"
                 f" decayed and committed (the next run decays the rest): {fault.message}")
    else:
        error = (f"decay applied to {progress.decayed} user(s), but its completion could not "
                 f"be recorded: {fault.message}")
    return RunReport(task=JOB_NAME, status=RunStatus.FAILED, reason=fault.reason,
                     error=error, execution_id=str(execution_id), started_at=started,
                     finished_at=utc_now(), counts=progress.counts())


def _log_summary(report: RunReport, progress: Progress) -> None:
    if report.status is RunStatus.COMPLETED:
        log.info("decay: %d user(s) decayed by %s point(s) in total, %d game over, %d skipped"
                 " (locked), %d chunk(s)", progress.decayed, progress.points,
                 progress.game_over, progress.skipped, progress.chunks)
    else:
        log.error("%s", report.error)
