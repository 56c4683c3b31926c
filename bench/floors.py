"""PostgreSQL's own floor for each job's writes, on the same schema and rows.

- recover: one UPDATE of the stuck conversations.
- decay: the very values a decay run wrote (copied from its database: each user's new score,
  clock and status, and its history row) written the simplest way, one UPDATE of the users
  plus one INSERT of the history, in one transaction; on the migrated schema (its indexes and
  triggers), and on a bare copy of users and score_history (same columns, checks, storage
  parameters and rows in the same physical order; primary keys only: no secondary index, no
  trigger). Both get a generous work_mem so the join is not starved; the schema floor says
  what decay's chunks say, that the history rows name users the same transaction updated
  (migration 0003), since that is true of it too. The written state is compared with decay's.
- process: the ideal (batch / concurrency x stage latency) leaves out the database, and the
  client shares this machine's cores with the server. So floors, measured with the same
  concurrency on one event loop of bare psycopg connections (opened before the clock), on
  the same rows: each conversation a sleep of the stage latency followed by the job's own
  final message, which carries the next claim (with its COMMIT and the next opening), as the
  job sends it (`one_message`: the job's floor); the same with `SELECT 1` for that message
  (`round_trip`: the round trips alone); and the job's statements as it sent them before the
  next claim rode on the final message, two messages a conversation (`statements`: the claim
  with its opening, then the final update with its COMMIT), which says what that is worth.
  Their slots start as the job's do, a few at a time (`StartRamp`): started together, slots
  of equal stages stay in step and every round trip waits on a burst, which no careful client
  need suffer, so a floor that started them together would not be a floor.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

import dbs
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import URL

from crontask_jobs.pipeline.engine import FINISH_RESULTS, Script
from crontask_jobs.pipeline.ramp import StartRamp
from crontask_jobs.pipeline.stage import Stage, StageContext
from crontask_jobs.tasks.process import ProcessOptions, claim_statement

STALE_REASON = "stuck in processing for more than 30m"
RECOVER_FLOOR = """
UPDATE conversations
   SET status = 'failed', failure_reason = %(reason)s, updated_at = now()
 WHERE status = 'processing' AND updated_at < now() - interval '30 minutes'
"""

OUTCOME_TABLE = """
CREATE UNLOGGED TABLE bench_outcome (
    user_id uuid, score_before numeric(5,2), score_after numeric(5,2),
    decayed_until timestamptz, game_status text, execution_id uuid)
"""
OUTCOME = """
COPY (SELECT h.user_id, h.score_before, h.score_after, u.last_decayed_at, u.game_status,
             h.execution_id
        FROM score_history AS h JOIN users AS u ON u.id = h.user_id) TO STDOUT (FORMAT BINARY)
"""
FLOOR_UPDATE = """
UPDATE {users} AS u
   SET relationship_score = o.score_after, last_decayed_at = o.decayed_until,
       game_status = o.game_status, updated_at = now()
  FROM bench_outcome AS o
 WHERE u.id = o.user_id
"""
FLOOR_INSERT = """
INSERT INTO {history} (user_id, score_before, score_after, reason, execution_id)
SELECT user_id, score_before, score_after, 'decay', execution_id FROM bench_outcome
"""
BARE = [
    "CREATE TABLE users_bare (LIKE users INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
    " INCLUDING STORAGE) WITH ({options})",
    "INSERT INTO users_bare SELECT * FROM users ORDER BY ctid",
    "ALTER TABLE users_bare ADD PRIMARY KEY (id)",
    "CREATE TABLE score_history_bare (LIKE score_history INCLUDING DEFAULTS INCLUDING IDENTITY"
    " INCLUDING CONSTRAINTS INCLUDING STORAGE)",
    "ALTER TABLE score_history_bare ADD PRIMARY KEY (id)",
    "VACUUM ANALYZE users_bare",
]
USERS_FINGERPRINT = """
SELECT count(*), sum(hashtext(id::text || ':' || relationship_score::text || ':'
                              || coalesce(last_decayed_at::text, '-') || ':' || game_status))
  FROM {users}
"""
HISTORY_FINGERPRINT = """
SELECT count(*), sum(hashtext(user_id::text || ':' || score_before::text || ':'
                              || score_after::text || ':' || coalesce(execution_id::text, '-')))
  FROM {history}
"""


@dataclass(frozen=True)
class Floor:
    seconds: float
    rows: int
    wal_bytes: int
    parts: dict[str, float]


def conninfo(db: URL) -> str:
    return db.set(drivername="postgresql").render_as_string(hide_password=False)


def recover_floor(db: URL) -> Floor:
    wal0 = dbs.wal_lsn(db)
    with psycopg.connect(conninfo(db)) as conn:
        t0 = time.perf_counter()
        rows = conn.execute(RECOVER_FLOOR, {"reason": STALE_REASON}).rowcount
        conn.commit()
        seconds = time.perf_counter() - t0
    return Floor(seconds, rows, dbs.wal_lsn(db) - wal0, {})


def copy_outcome(source: URL, dest: URL) -> int:
    """Decay's writes, from the database it ran in into `bench_outcome` of another."""
    with psycopg.connect(conninfo(source)) as src, psycopg.connect(conninfo(dest)) as dst:
        dst.execute(OUTCOME_TABLE)
        with src.cursor().copy(OUTCOME) as out, dst.cursor().copy(
                "COPY bench_outcome FROM STDIN (FORMAT BINARY)") as into:
            for block in out:
                into.write(block)
        dst.commit()
        dst.autocommit = True
        dst.execute("VACUUM ANALYZE bench_outcome")
        return int(dst.execute("SELECT count(*) FROM bench_outcome").fetchone()[0])


def make_bare(db: URL) -> None:
    with psycopg.connect(conninfo(db), autocommit=True) as conn:
        options = conn.execute("SELECT array_to_string(reloptions, ', ') FROM pg_class"
                               " WHERE oid = 'users'::regclass").fetchone()
        storage = (options[0] if options and options[0] else "fillfactor = 100")
        for statement in BARE:
            conn.execute(statement.format(options=storage))


def decay_floor(db: URL, *, bare: bool) -> Floor:
    users, history = ("users_bare", "score_history_bare") if bare else ("users", "score_history")
    dbs.checkpoint(db)
    wal0 = dbs.wal_lsn(db)
    with psycopg.connect(conninfo(db)) as conn:
        t0 = time.perf_counter()
        conn.execute("SET LOCAL work_mem = '512MB'")
        if not bare:
            conn.execute("SET LOCAL crontask.score_history_users_locked = on")
        updated = conn.execute(FLOOR_UPDATE.format(users=users)).rowcount
        t1 = time.perf_counter()
        inserted = conn.execute(FLOOR_INSERT.format(history=history)).rowcount
        t2 = time.perf_counter()
        conn.commit()
        t3 = time.perf_counter()
    assert updated == inserted, (updated, inserted)
    return Floor(t3 - t0, inserted, dbs.wal_lsn(db) - wal0,
                 {"update": t1 - t0, "insert": t2 - t1, "commit": t3 - t2})


def fingerprint(db: URL, *, bare: bool = False) -> tuple[object, ...]:
    users, history = ("users_bare", "score_history_bare") if bare else ("users", "score_history")
    e = dbs.engine(db)
    try:
        with e.connect() as c:
            u = tuple(c.execute(sa.text(USERS_FINGERPRINT.format(users=users))).one())
            h = tuple(c.execute(sa.text(HISTORY_FINGERPRINT.format(history=history))).one())
    finally:
        e.dispose()
    return u + h


PROCESS_FLOORS = ("round_trip", "one_message", "statements")
"""What a process floor sends per conversation (see the module's doc)."""


def process_floor(db: URL, batch: int, concurrency: int, latency: float, *,
                  sends: str) -> float:
    """Seconds for `batch` conversations on bare connections (see the module's doc)."""
    assert sends in PROCESS_FLOORS, sends

    async def stage(ctx: StageContext) -> None:
        await asyncio.sleep(latency)

    async def run() -> float:
        with psycopg.connect(conninfo(db), autocommit=True) as setup:
            row = setup.execute("INSERT INTO job_executions (job_name, status, host)"
                                " VALUES ('process', 'running', 'floor') RETURNING id").fetchone()
        owner = row[0] if row else uuid.uuid4()
        script = Script.of(owner, claim_statement(owner, ProcessOptions()),
                           [Stage("io", stage)], {"io": latency})
        conns = [await psycopg.AsyncConnection.connect(conninfo(db), autocommit=True)
                 for _ in range(concurrency)]
        for conn in conns:
            await conn.execute(script.prepare, prepare=False)
        left = [batch]
        ramp = StartRamp(concurrency)

        async def claimed(cursor: psycopg.AsyncCursor[Any], skip: int) -> Any:
            for _ in range(skip):
                cursor.nextset()
            got = await cursor.fetchone()
            assert got is not None, "the floor ran out of eligible conversations"
            return got

        async def slot(index: int, conn: psycopg.AsyncConnection[Any]) -> None:
            await ramp.turn(index)
            try:
                await slot_work(index, conn)
            finally:
                ramp.started(index)

        async def slot_work(index: int, conn: psycopg.AsyncConnection[Any]) -> None:
            if sends == "statements":  # two messages a conversation
                while left[0] > 0:
                    left[0] -= 1
                    row = await claimed(await conn.execute(script.claim_and_open,
                                                           prepare=False), 1)
                    ramp.started(index)
                    await asyncio.sleep(latency)
                    await conn.execute(script.finish(row[0], []), prepare=False)
                return
            # One message a conversation: the next claim rides on the final message.
            if left[0] <= 0:
                return
            left[0] -= 1
            if sends == "one_message":
                row = await claimed(await conn.execute(script.claim_and_open, prepare=False), 1)
            else:
                await conn.execute(b"SELECT 1", prepare=False)
            ramp.started(index)
            while True:
                await asyncio.sleep(latency)
                more = left[0] > 0
                if more:
                    left[0] -= 1
                if sends == "round_trip":
                    await conn.execute(b"SELECT 1", prepare=False)
                elif more:
                    row = await claimed(await conn.execute(
                        script.finish(row[0], [], claim_next=True), prepare=False),
                        FINISH_RESULTS + 1)
                else:
                    await conn.execute(script.finish(row[0], []), prepare=False)
                if not more:
                    return

        t0 = time.perf_counter()
        try:
            await asyncio.gather(*(slot(index, conn) for index, conn in enumerate(conns)))
            return time.perf_counter() - t0
        finally:
            for conn in conns:
                await conn.close()

    return asyncio.run(run())
