"""recover (FR-001): stuck conversations become failed; abandoned executions are closed.

One UPDATE ... RETURNING per kind of row: a row is either recovered or not, with no window
between finding and changing it in which a pipeline could finish it. The execution row is
closed in the same transaction as the recovery, so the record and the change agree.

No statement here waits for another session's row lock. A conversation whose row is locked
is being written by a live pipeline (or a frozen one: its session is ended by the server's
idle_in_transaction_session_timeout, which releases the lock), so recover skips it
(`FOR NO KEY UPDATE SKIP LOCKED`), counts it as `skipped_locked`, and the next run takes it if
it is still stuck. Everything else is recovered at once, whatever one frozen pod holds. The
lock is NO KEY UPDATE, the strongest recover needs (no key changes), so it never blocks the
foreign-key check (KEY SHARE) of a message being added to the conversation.

A SIGTERM before the COMMIT rolls the recovery back: nothing is recovered, and the execution
row is closed as failed (`terminated`). One that lands on the COMMIT may or may not stop it;
the execution row, closed as completed in the same transaction, says which, and the report
follows it: a recovery that committed is reported complete, with what it recovered.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from itertools import islice
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crontask_contract.durations import format_duration
from crontask_contract.report import RunReport, RunStatus
from crontask_jobs.db import connection
from crontask_jobs.faults import Fault
from crontask_jobs.repositories import JobExecutionRepository
from crontask_jobs.tasks.common import TERMINATED, execution_result, retrying, utc_now

log = logging.getLogger(__name__)

JOB_NAME: Final = "recover"
DEFAULT_STALE_AFTER: Final = timedelta(minutes=30)
DEFAULT_ABANDONED_AFTER: Final = timedelta(hours=2)
MAX_RESULT_IDS: Final = 100
IDS_PER_LOG_LINE: Final = 40
"""40 ids of 36 characters and the line's own text stay under the log's 2,000 characters."""


@dataclass(frozen=True)
class RecoverOptions:
    stale_after: timedelta = DEFAULT_STALE_AFTER
    abandoned_after: timedelta = DEFAULT_ABANDONED_AFTER


# Lock policy: SKIP LOCKED (see the module's docstring). Each row is updated by the version
# it locked (its ctid: a TID fetch), not looked up again by id, which the planner would do
# with a hash join over the whole table once it expects thousands of stuck rows. What it
# recovered comes back as the log's lines (`log_lines`): grouped by the execution that had
# claimed them, at most :per_line ids to a group, in id order, as text. The server does this
# in a few milliseconds; turning 10,000 rows into Python objects and strings cost the client
# about 60 ms, a fifth of the recovery itself.
RECOVER_CONVERSATIONS: Final = sa.text("""
WITH stuck AS (
    SELECT ctid AS row_id, id
      FROM conversations
     WHERE status = 'processing'
       AND updated_at < now() - :stale_after
       FOR NO KEY UPDATE SKIP LOCKED
),
recovered AS (
    UPDATE conversations AS c
       SET status = 'failed',
           failure_reason = :reason,
           updated_at = now()
      FROM stuck
     WHERE c.ctid = stuck.row_id
       AND c.id = stuck.id
    RETURNING c.id, c.claimed_by
),
numbered AS (
    SELECT id, claimed_by, row_number() OVER (PARTITION BY claimed_by ORDER BY id) - 1 AS n
      FROM recovered
)
SELECT CAST(claimed_by AS text) AS owner, count(*) AS recovered,
       string_agg(CAST(id AS text), ', ' ORDER BY id) AS ids
  FROM numbered
 GROUP BY claimed_by, n / :per_line
 ORDER BY claimed_by NULLS FIRST, min(n)
""")
# No lock: what is still stuck after the UPDATE above (in the same transaction, so with the
# same now()) is exactly what it skipped because another session held it.
COUNT_STILL_STUCK: Final = sa.text("""
SELECT count(*) FROM conversations
 WHERE status = 'processing' AND updated_at < now() - :stale_after
""")

# Lock policy: SKIP LOCKED. An execution row is locked only while its own run writes it (its
# finish): that run is alive after all, and the next recover sees the result.
CLOSE_ABANDONED: Final = sa.text("""
WITH abandoned AS (
    SELECT id
      FROM job_executions
     WHERE status = 'running'
       AND started_at < now() - :abandoned_after
       AND id <> :self
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE job_executions AS j
   SET status = 'failed',
       completed_at = now(),
       error = 'abandoned: still running after ' || :abandoned_text
               || '; the pod was most likely killed'
  FROM abandoned
 WHERE j.id = abandoned.id
RETURNING j.id, j.job_name, j.started_at
""")
EXECUTION_STATUS: Final = sa.text("SELECT status FROM job_executions WHERE id = :id")
COUNT_STILL_ABANDONED: Final = sa.text("""
SELECT count(*) FROM job_executions
 WHERE status = 'running' AND started_at < now() - :abandoned_after AND id <> :self
""")


@dataclass(frozen=True)
class _Recovery:
    """What one recovery transaction did: its report, and what to log once it is committed
    (logged before, a rolled-back recovery would be named as done)."""

    report: RunReport
    recovered: Sequence[Any]
    """RECOVER_CONVERSATIONS' rows: the recovered ids, a log line's worth to a row."""
    abandoned: Sequence[Any]
    skipped: int
    abandoned_skipped: int

    def announce(self) -> None:
        log_recovered(self.recovered)
        if self.skipped:
            log.warning("recover: %d stuck conversation(s) skipped: another session holds "
                        "their row lock (the next run takes them if they are still stuck)",
                        self.skipped)
        for row in self.abandoned:
            log.warning("closed abandoned %s execution %s (started %s)", row.job_name,
                        row.id, row.started_at.isoformat())
        log.info("recover: %d conversation(s) recovered, %d skipped (locked), %d "
                 "execution(s) abandoned", sum(g.recovered for g in self.recovered),
                 self.skipped + self.abandoned_skipped, len(self.abandoned))


async def run_recover(engine: AsyncEngine, options: RecoverOptions) -> RunReport:
    started = utc_now()
    async with connection(engine) as conn, conn.begin():
        execution_id = await JobExecutionRepository(conn).start(JOB_NAME)
    sent: list[_Recovery] = []
    """The recovery whose COMMIT was sent (whether it took is the database's to say)."""

    async def work(conn: AsyncConnection) -> _Recovery:
        async with conn.begin():
            recovery = await _recover(conn, options, execution_id, started)
            sent.append(recovery)
        return recovery

    try:
        outcome: _Recovery | Fault = await retrying(engine, work, budget_s=0)
    except asyncio.CancelledError:
        outcome = await _after_sigterm(engine, execution_id, sent[-1] if sent else None)
    if isinstance(outcome, _Recovery):
        outcome.announce()
        return outcome.report
    return await _failed(engine, execution_id, started, outcome)


async def _after_sigterm(engine: AsyncEngine, execution_id: uuid.UUID,
                         sent: _Recovery | None) -> _Recovery | Fault:
    """What a SIGTERM left. Before the COMMIT, the recovery is rolled back. On the COMMIT, the
    driver has the server cancel it and waits for its answer: the COMMIT may have taken all the
    same (a cancel that comes too late, or one that only ends a wait for a synchronous
    standby). The execution row, closed in the recovery's own transaction, says which."""
    nothing = Fault(TERMINATED, "the run was terminated (SIGTERM); nothing was recovered")
    if sent is None:
        return nothing

    async def closed(conn: AsyncConnection) -> bool:
        status = (await conn.execute(EXECUTION_STATUS, {"id": execution_id})).scalar_one()
        await conn.rollback()
        return bool(status == "completed")

    committed = await retrying(engine, closed, budget_s=10)
    if committed is True:
        log.warning("recover: terminated (SIGTERM) on its COMMIT, which took: the recovery"
                    " is committed and the run complete")
        return sent
    if committed is False:
        return nothing
    return Fault(TERMINATED, "the run was terminated (SIGTERM) on its COMMIT, and whether"
                 f" the recovery committed could not be read ({committed.reason}): the"
                 " conversations' status says")


async def _recover(conn: AsyncConnection, options: RecoverOptions, execution_id: uuid.UUID,
                   started: str) -> _Recovery:
    """Every write of the run, its execution row closed as completed, in the caller's
    transaction (not yet committed)."""
    reason = f"stuck in processing for more than {format_duration(options.stale_after)}"
    recovered = (await conn.execute(RECOVER_CONVERSATIONS, {
        "reason": reason, "stale_after": options.stale_after,
        "per_line": IDS_PER_LOG_LINE})).all()
    count = sum(g.recovered for g in recovered)
    skipped = (await conn.execute(COUNT_STILL_STUCK,
                                  {"stale_after": options.stale_after})).scalar_one()
    abandoned = (await conn.execute(CLOSE_ABANDONED, {
        "abandoned_after": options.abandoned_after,
        "abandoned_text": format_duration(options.abandoned_after),
        "self": execution_id})).all()
    abandoned_skipped = (await conn.execute(COUNT_STILL_ABANDONED, {
        "abandoned_after": options.abandoned_after, "self": execution_id})).scalar_one()
    counts = {"stuck": count + skipped, "recovered": count,
              "skipped_locked": skipped + abandoned_skipped, "abandoned": len(abandoned)}
    report = RunReport(task=JOB_NAME, status=RunStatus.COMPLETED,
                       execution_id=str(execution_id), started_at=started,
                       finished_at=utc_now(), counts=counts)
    await JobExecutionRepository(conn).finish(execution_id, "completed", execution_result(
        report, recovered_ids=list(islice((i for g in recovered for i in g.ids.split(", ")),
                                          MAX_RESULT_IDS)),
        abandoned_ids=[str(r.id) for r in abandoned[:MAX_RESULT_IDS]],
        conversations_skipped_locked=skipped, executions_skipped_locked=abandoned_skipped))
    return _Recovery(report, recovered, abandoned, skipped, abandoned_skipped)


def log_lines(groups: Sequence[Any]) -> list[str]:
    """Every recovered conversation, named in a few lines, from RECOVER_CONVERSATIONS' rows
    (`owner`, `recovered`, `ids`: one execution's ids, at most IDS_PER_LOG_LINE of them): one
    line per conversation, at 10,000 stuck, cost more than the recovery itself. Pure."""
    total = sum(g.recovered for g in groups)
    lines, done = [], 0
    for g in groups:
        lines.append(f"recovered {g.recovered} stuck conversation(s) claimed by execution"
                     f" {g.owner} ({done + 1}-{done + g.recovered} of {total}): {g.ids}")
        done += g.recovered
    return lines


def log_recovered(recovered: Sequence[Any]) -> None:
    for line in log_lines(recovered):
        log.warning("%s", line)


async def _failed(engine: AsyncEngine, execution_id: uuid.UUID, started: str,
                  fault: Fault) -> RunReport:
    """The recovery was rolled back; close the run's row (retried while the server is away)."""
    report = RunReport(task=JOB_NAME, status=RunStatus.FAILED, reason=fault.reason,
                       error=f"recover failed: {fault.message}", execution_id=str(execution_id),
                       started_at=started, finished_at=utc_now())
    log.error("%s", report.error)

    async def close(conn: AsyncConnection) -> None:
        async with conn.begin():
            await JobExecutionRepository(conn).finish(execution_id, "failed",
                                                      execution_result(report), report.error)

    await retrying(engine, close, budget_s=30)
    return report
