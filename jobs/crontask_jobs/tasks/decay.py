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
at most that long. A user locked by someone else is skipped and counted in `skipped_locked`:
decay is measured from each user's own clock, so the next run charges exactly the time this one
did not, and a run that dies midway loses nothing either (the next one decays the rest, and the
users it already did have nothing left to charge). Every chunk uses the same instant (`now` of
the run's first statement), so the run means one moment whatever its length.

**Two ways to take a chunk.** Normally in one pass: the keyset scan locks each row as it reads
it (`FOR NO KEY UPDATE NOWAIT`, REPEATABLE READ), computes, updates and writes history, so
each user is found once. That pass cannot skip a row and still know where the chunk ends, so
when it meets someone's lock it fails at once (nothing waits), is rolled back, and the same
chunk is taken by the exact scan instead: an unlocked page of the index, then its rows locked
`SKIP LOCKED` (READ COMMITTED), the page's candidates minus what was locked counted as
skipped. After a failed attempt the next 1, 2, 4 ... 64 chunks go straight to the exact scan
(`_Contention`); `exact_chunks` in the run's result says how many did.

**Several connections.** PostgreSQL runs a statement on one core. From `parallel_from` users
(the planner's estimate) up to `workers` connections walk the chapters at once, each chapter
cut into key ranges at keys of a small sample (`decay_ranges`); the connection holding the
run's lock is one of them, so its session is never idle. Each range is walked exactly as a
whole chapter is on one connection.

**Chunk size.** 5,000 users: a chunk holds its locks for about 0.1-0.2 s on two cores (the
run's result records the longest, `longest_chunk_ms`), and the per-chunk cost (three round
trips, planning) stays under 1% of the run at 1M users (200 chunks). Each chunk commits with
synchronous_commit off: losing one in a crash costs nothing (see CHUNK_SETTINGS).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from crontask_contract.report import RunReport, RunStatus, SkipReason
from crontask_jobs.db import ConnectFailed, connection
from crontask_jobs.decay_ranges import KeyRange, split_ranges, whole_chapters
from crontask_jobs.decay_rules import CHAPTER_RULES, DEFAULT_MAX_DECAY_PER_RUN, cents
from crontask_jobs.faults import LOCK_TIMEOUT, SERIALIZATION_FAILURE, Fault, classify
from crontask_jobs.repositories import JobExecutionRepository
from crontask_jobs.tasks.common import TERMINATED, execution_result, retrying, utc_now

log = logging.getLogger(__name__)

JOB_NAME: Final = "decay"
DEFAULT_WINDOW: Final = timedelta(minutes=50)
DEFAULT_CHUNK_SIZE: Final = 5000
DEFAULT_WORKERS: Final = 2
PARALLEL_FROM_USERS: Final = 50_000
KEEP_ALIVE_S: Final = 10.0
"""A sixth of the jobs' idle_session_timeout (60 s)."""
DECAY_LOCK_KEY: Final = 0x6372_6F6E_6465_63  # "crondec"


@dataclass(frozen=True)
class DecayOptions:
    window: timedelta = DEFAULT_WINDOW
    max_decay_per_run: Decimal = DEFAULT_MAX_DECAY_PER_RUN
    chunk_size: int = DEFAULT_CHUNK_SIZE
    workers: int = DEFAULT_WORKERS
    """Connections that walk the users at once (one of them holds the run's lock)."""
    parallel_from: int = PARALLEL_FROM_USERS
    """Below this many users (the planner's estimate) one connection walks them all."""

    @property
    def pool_size(self) -> int:
        """The engine's connections: the workers, and one to record the outcome with."""
        return self.workers + 1


# What every chunk does with the users it holds (`locked`: row_id, id, relationship_score,
# last_interaction_at, last_decayed_at): compute the charge (decay_rules' arithmetic), update
# each row by the version it locked (a TID fetch, no index lookup), and write the history from
# the update's RETURNING, so a history row exists only for a user this statement updated. The
# cents are rounded down and the clock moves by the time charged (decay_rules). The run's
# instant is turned into epoch seconds once per statement, not once per row.
_APPLY: Final = """
timed AS (
    SELECT row_id, id, relationship_score AS score_before, relationship_score * 100 AS score_cents,
           GREATEST(last_interaction_at + make_interval(secs => :grace_s),
                    COALESCE(last_decayed_at, '-infinity')) AS start
      FROM locked
),
due AS (
    SELECT row_id, id, score_before, score_cents, start,
           div(CAST(:rate AS numeric)
               * ((SELECT EXTRACT(EPOCH FROM CAST(:now AS timestamptz)))
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
"""
_TOTALS: Final = """
CROSS JOIN (SELECT count(*) AS decayed, count(*) FILTER (WHERE score_after = 0) AS game_over,
                   COALESCE(sum(score_before - score_after), 0) AS points
              FROM history) AS h
"""

# A chunk, the common case: one pass along the keyset index that locks as it reads (no second
# lookup of each user), in a REPEATABLE READ transaction, so the rows it locks are exactly the
# versions it read and the next chunk starts after the last of them. Lock policy: NOWAIT. It
# never waits for a row someone holds, and it never skips one silently either: a user another
# session holds (55P03), or changed since the snapshot (40001), fails the attempt, which is
# rolled back and the chunk is done again by DECAY_CHUNK_EXACT below, which skips and counts.
_LOCK_AS_READ: Final = """
WITH locked AS (
    SELECT ctid AS row_id, id, relationship_score, last_interaction_at, last_decayed_at
      FROM users
     WHERE game_status = 'active'
       AND chapter = :chapter
       AND relationship_score > 0
       AND last_interaction_at < CAST(:now AS timestamptz) - make_interval(secs => :grace_s)
       AND (last_interaction_at, id) > (CAST(:after_t AS timestamptz), CAST(:after_id AS uuid))
       AND (last_interaction_at, id) <= (CAST(:until_t AS timestamptz), CAST(:until_id AS uuid))
     ORDER BY last_interaction_at, id
     LIMIT :chunk
       FOR NO KEY UPDATE NOWAIT
),"""
# Where the next chunk starts. The driver cannot load an infinite timestamp, and the only one a
# chunk can end on is '-infinity' (later than every grace's end is never past it): NULL says so.
_LAST_T: Final = ("CASE WHEN isfinite(k.last_interaction_at) THEN k.last_interaction_at END"
                  " AS last_t")
_LOCK_AS_READ_RESULT: Final = """
SELECT l.n AS page_rows, {last_t}, k.id AS last_id, 0 AS skipped,
       h.decayed, h.game_over, h.points
  FROM (SELECT count(*) AS n FROM locked) AS l
  LEFT JOIN LATERAL (SELECT last_interaction_at, id FROM locked
                      ORDER BY last_interaction_at DESC, id DESC LIMIT 1) AS k ON true
"""
# Constant fragments only: no value is ever formatted into the text.
DECAY_CHUNK: Final = sa.text(
    _LOCK_AS_READ + _APPLY + _LOCK_AS_READ_RESULT.format(last_t=_LAST_T) + _TOTALS)

# A chunk that met someone else's lock (READ COMMITTED). `page` walks the keyset index without
# locking (it only decides where the chunk ends); `locked` takes the rows of the page that
# still qualify, skipping (not waiting for) rows another session holds: lock policy SKIP
# LOCKED, because a locked user is being touched by a pipeline, and elapsed-time decay makes
# skipping exact (the next run charges it all); the page's candidates minus what was locked is
# what was skipped. NO KEY UPDATE, not UPDATE (both statements): decay changes no key, and the
# weaker lock does not block the foreign-key checks (KEY SHARE on the user) of a pipeline
# changing the user's conversation.
_SKIP_LOCKED: Final = """
WITH page AS (
    SELECT id, last_interaction_at, relationship_score > 0 AS positive
      FROM users
     WHERE game_status = 'active'
       AND chapter = :chapter
       AND last_interaction_at < CAST(:now AS timestamptz) - make_interval(secs => :grace_s)
       AND (last_interaction_at, id) > (CAST(:after_t AS timestamptz), CAST(:after_id AS uuid))
       AND (last_interaction_at, id) <= (CAST(:until_t AS timestamptz), CAST(:until_id AS uuid))
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
),"""
_SKIP_LOCKED_RESULT: Final = """
SELECT p.n AS page_rows, {last_t}, k.id AS last_id,
       p.positive - l.n AS skipped, h.decayed, h.game_over, h.points
  FROM (SELECT count(*) AS n, count(*) FILTER (WHERE positive) AS positive FROM page) AS p
 CROSS JOIN (SELECT count(*) AS n FROM locked) AS l
  LEFT JOIN LATERAL (SELECT last_interaction_at, id FROM page
                      ORDER BY last_interaction_at DESC, id DESC LIMIT 1) AS k ON true
"""
DECAY_CHUNK_EXACT: Final = sa.text(
    _SKIP_LOCKED + _APPLY + _SKIP_LOCKED_RESULT.format(last_t=_LAST_T) + _TOTALS)

# First in every chunk's transaction. The history rows a chunk writes name only users it
# updated (and holds) in the same statement, so score_history's check that they exist has
# nothing to find (migration 0003). synchronous_commit off: a chunk lost in a crash loses
# nothing (the next run charges those users, by their own clocks), and the run's record is
# committed synchronously after its chunks, which makes every one of them durable first.
CHUNK_SETTINGS: Final = sa.text(
    "SELECT set_config('synchronous_commit', 'off', true),"
    " set_config('crontask.score_history_users_locked', 'on', true)")
_MET_A_LOCK: Final = frozenset({LOCK_TIMEOUT, SERIALIZATION_FAILURE})

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
    exact_chunks: int = 0
    """Chunks done again (or first) by the skip-and-count scan, because of someone's lock."""
    longest_chunk_s: float = 0.0
    """The longest chunk transaction: no user row was locked by this run for longer."""
    workers: int = 0
    """Connections that walked the users (fewer than planned if one could not be opened)."""
    ranges: int = 0
    """Key ranges the users were split into (one per chapter on one connection)."""

    def add_chunk(self, row: Any) -> None:
        """A committed chunk's figures (its statement's result row)."""
        self.chunks += 1
        self.decayed += row.decayed
        self.game_over += row.game_over
        self.points += row.points
        self.skipped += row.skipped

    def end_games(self, ended: int) -> None:
        """Active users at 0 whose game a committed statement ended."""
        self.game_over += ended

    def counts(self) -> dict[str, int]:
        return {"users_decayed": self.decayed, "game_over": self.game_over,
                "points_decayed": round(self.points), "skipped_locked": self.skipped}


async def decay_all(engine: AsyncEngine, conn: AsyncConnection, options: DecayOptions,
                    now: datetime, execution_id: uuid.UUID, progress: Progress) -> None:
    """Every chunk of every chapter, then the active users at 0; one transaction each.

    `conn` (the one holding the run's lock) always works; up to `options.workers - 1` more
    connections from `engine` join it on a large table (`_plan`). A connection that cannot
    be opened is done without: the others take its share."""
    ranges, workers = await _plan(engine, conn, options, now)
    progress.ranges = len(ranges)
    queue = deque(ranges)
    failures: list[BaseException] = []
    finished = asyncio.Event()

    async def work(c: AsyncConnection) -> None:
        progress.workers += 1
        contention = _Contention()
        while queue and not failures:
            await _walk(c, queue.popleft(), options, now, execution_id, progress, contention,
                        stopped=lambda: bool(failures))

    async def own() -> None:
        try:
            await work(conn)
            await _keep_alive(conn, finished)
        except Exception as exc:
            failures.append(exc)  # the others stop after their chunk in flight

    async def extra() -> None:
        try:
            async with connection(engine) as c:
                await work(c)
        except ConnectFailed as exc:
            log.warning("decay: a connection could not be opened (%s); the others carry on",
                        type(exc.__cause__).__name__)
        except Exception as exc:
            failures.append(exc)

    async def extras() -> None:
        try:
            await asyncio.gather(*(extra() for _ in range(workers - 1)), return_exceptions=True)
        finally:
            finished.set()

    # return_exceptions: a gather that is cancelled (SIGTERM) still waits for every worker to
    # settle its chunk in flight, where without it the first cancelled one ends the wait, and
    # the run would report while another connection's COMMIT could still take effect.
    await asyncio.gather(own(), extras(), return_exceptions=True)
    if failures:
        raise failures[0]
    await conn.execution_options(isolation_level="READ COMMITTED")
    while True:
        async with conn.begin() as transaction:
            row = (await conn.execute(END_ZERO_SCORES, {"chunk": options.chunk_size})).one()
            await _commit_then_count(transaction, partial(progress.end_games, row.ended))
        if row.ended < options.chunk_size:
            progress.skipped += row.remaining - row.ended
            break


async def _keep_alive(conn: AsyncConnection, finished: asyncio.Event) -> None:
    """The lock holder, out of ranges, waits for the other connections without ever being idle
    for as long as `idle_session_timeout`: a session it ended would take the run's lock."""
    while not finished.is_set():
        try:
            await asyncio.wait_for(finished.wait(), KEEP_ALIVE_S)
        except TimeoutError:
            await conn.execute(sa.text("SELECT 1"))
            await conn.commit()


async def _walk(conn: AsyncConnection, key_range: KeyRange, options: DecayOptions,
                now: datetime, execution_id: uuid.UUID, progress: Progress,
                contention: _Contention, stopped: Callable[[], bool]) -> None:
    """One range, chunk after chunk along the keyset, each chunk its own transaction, until
    the range ends or `stopped()` (another connection failed)."""
    rule = CHAPTER_RULES[key_range.chapter]
    after = key_range.after
    while not stopped():
        params = {"chapter": key_range.chapter, "rate": rule.rate_per_hour,
                  "grace_s": rule.grace.total_seconds(),
                  "cap_cents": cents(options.max_decay_per_run), "now": now,
                  "after_t": after[0], "after_id": after[1],
                  "until_t": key_range.until[0], "until_id": key_range.until[1],
                  "chunk": options.chunk_size, "execution_id": execution_id}
        row = None
        if contention.try_one_pass():
            try:
                row = await _chunk(conn, DECAY_CHUNK, params, "REPEATABLE READ", progress)
            except DBAPIError as exc:
                if classify(exc).reason not in _MET_A_LOCK:
                    raise
            contention.one_pass_done(met_a_lock=row is None)
        if row is None:
            row = await _chunk(conn, DECAY_CHUNK_EXACT, params, "READ COMMITTED", progress)
            progress.exact_chunks += 1
        if row.page_rows < options.chunk_size:
            return
        after = (row.last_t if row.last_t is not None else "-infinity", row.last_id)


# How many users the planner's statistics say `users` holds (-1: never analyzed), and a sample
# of the keys decay walks: a few thousand rows, read a few pages at a time (SYSTEM sampling
# reads whole pages, not the table). Only finite clocks: the driver cannot load an infinite
# timestamp, and the sentinels of decay_ranges bound those users anyway.
USERS_ESTIMATE: Final = sa.text(
    "SELECT reltuples FROM pg_class WHERE oid = to_regclass('users')")
KEY_SAMPLE: Final = sa.text("""
SELECT chapter, last_interaction_at, id
  FROM users TABLESAMPLE SYSTEM (:percent)
 WHERE game_status = 'active' AND relationship_score > 0 AND isfinite(last_interaction_at)
""")
_SAMPLE_ROWS: Final = 4000


async def _plan(engine: AsyncEngine, conn: AsyncConnection, options: DecayOptions,
                now: datetime) -> tuple[list[KeyRange], int]:
    """The ranges to walk and how many connections walk them: one connection and one range
    per chapter below `parallel_from` users (by the planner's estimate), or when the engine
    has no connection to spare; else ranges cut at keys of a sample."""
    chapters = sorted(CHAPTER_RULES)
    spare = max(0, _pool_size(engine) - 1)  # the run's lock holder is one of the pool's own
    workers = max(1, min(options.workers, spare))
    await conn.execution_options(isolation_level="READ COMMITTED")
    async with conn.begin():
        estimate = (await conn.execute(USERS_ESTIMATE)).scalar_one_or_none()
        estimate = max(0.0, float(estimate or 0))  # -1: never analyzed
        if workers == 1 or estimate < options.parallel_from:
            return whole_chapters(chapters), 1
        fraction = min(1.0, _SAMPLE_ROWS / max(estimate, 1.0))
        sampled = (await conn.execute(KEY_SAMPLE, {"percent": fraction * 100})).all()
    sample: dict[int, list[tuple[datetime, uuid.UUID]]] = {}
    for chapter, seen, uid in sampled:
        rule = CHAPTER_RULES.get(chapter)
        if rule is not None and seen + rule.grace < now:
            sample.setdefault(chapter, []).append((seen, uid))
    ranges = split_ranges(chapters, sample, fraction, workers, options.chunk_size)
    return ranges, min(workers, len(ranges))


def _pool_size(engine: AsyncEngine) -> int:
    size = getattr(engine.pool, "size", None)
    return int(size()) if callable(size) else 1


@dataclass
class _Contention:
    """When to try the one-pass chunk: always, until it meets a lock; then again only after
    1, 2, 4 ... 64 chunks by the exact scan, so steady contention (many pipelines touching
    users) costs a failed attempt now and then, not one per chunk."""

    wait: int = 0
    backoff: int = 1

    def try_one_pass(self) -> bool:
        if self.wait == 0:
            return True
        self.wait -= 1
        return False

    def one_pass_done(self, *, met_a_lock: bool) -> None:
        if met_a_lock:
            self.wait, self.backoff = self.backoff, min(self.backoff * 2, 64)
        else:
            self.backoff = 1


async def _chunk(conn: AsyncConnection, statement: sa.TextClause, params: dict[str, Any],
                 isolation: str, progress: Progress) -> Any:
    """One chunk in its own transaction; its length bounds how long it held any user."""
    await conn.execution_options(isolation_level=isolation)
    t0 = time.monotonic()
    try:
        async with conn.begin() as transaction:
            await conn.execute(CHUNK_SETTINGS)
            row = (await conn.execute(statement, params)).one()
            await _commit_then_count(transaction, partial(progress.add_chunk, row))
            return row
    finally:
        progress.longest_chunk_s = max(progress.longest_chunk_s, time.monotonic() - t0)


async def _commit_then_count(transaction: AsyncTransaction, count: Callable[[], None]) -> None:
    """COMMIT, then `count` what it made durable. A cancellation (SIGTERM) that lands while the
    COMMIT is in flight waits for its outcome first: cancelled there, the COMMIT could take
    effect on the server unseen, and the report would leave out work that was committed."""
    commit = asyncio.ensure_future(transaction.commit())
    try:
        await asyncio.shield(commit)
    except asyncio.CancelledError:
        await commit
        count()
        raise
    count()


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
        await decay_all(engine, conn, options, at, execution_id, progress)
    except asyncio.CancelledError:
        fault = Fault(TERMINATED, "the run was terminated (SIGTERM) between or during chunks")
    except Exception as exc:
        fault = classify(exc)
    report = _report(execution_id, started, progress, fault)
    details = {"points_decayed_exact": str(progress.points), "chunks": progress.chunks,
               "exact_chunks": progress.exact_chunks,
               "longest_chunk_ms": round(progress.longest_chunk_s * 1000, 1),
               "workers": progress.workers, "ranges": progress.ranges,
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
