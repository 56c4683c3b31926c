"""recover (FR-001): stuck conversations become failed; abandoned executions are closed.

One UPDATE ... RETURNING per kind of row: a row is either recovered or not, with no window
between finding and changing it in which a pipeline could finish it. The execution row is
closed in the same transaction as the recovery, so the record and the change agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crontask_contract.durations import format_duration
from crontask_contract.report import RunReport, RunStatus
from crontask_jobs.repositories import JobExecutionRepository
from crontask_jobs.tasks.common import TaskFailed, close_failed, utc_now

log = logging.getLogger(__name__)

JOB_NAME = "recover"
DEFAULT_STALE_AFTER = timedelta(minutes=30)
DEFAULT_ABANDONED_AFTER = timedelta(hours=2)


@dataclass(frozen=True)
class RecoverOptions:
    stale_after: timedelta = DEFAULT_STALE_AFTER
    abandoned_after: timedelta = DEFAULT_ABANDONED_AFTER


RECOVER_CONVERSATIONS = sa.text("""
UPDATE conversations
   SET status = 'failed',
       failure_reason = :reason,
       updated_at = now()
 WHERE status = 'processing'
   AND updated_at < now() - :stale_after
RETURNING id, user_id, claimed_by, processing_started_at
""")

CLOSE_ABANDONED = sa.text("""
UPDATE job_executions
   SET status = 'failed',
       completed_at = now(),
       error = 'abandoned: still running after ' || :abandoned_text
               || '; the pod was most likely killed'
 WHERE status = 'running'
   AND started_at < now() - :abandoned_after
   AND id <> :self
RETURNING id, job_name, started_at
""")


async def run_recover(engine: AsyncEngine, options: RecoverOptions) -> RunReport:
    started = utc_now()
    async with engine.begin() as conn:
        execution_id = await JobExecutionRepository(conn).start(JOB_NAME)
    try:
        async with engine.begin() as conn:
            reason = f"stuck in processing for more than {format_duration(options.stale_after)}"
            recovered = (await conn.execute(RECOVER_CONVERSATIONS, {
                "reason": reason, "stale_after": options.stale_after})).all()
            for row in recovered:
                log.warning("recovered stuck conversation %s (user %s, claimed by execution %s"
                            " at %s)", row.id, row.user_id, row.claimed_by,
                            row.processing_started_at)
            abandoned = (await conn.execute(CLOSE_ABANDONED, {
                "abandoned_after": options.abandoned_after,
                "abandoned_text": format_duration(options.abandoned_after),
                "self": execution_id})).all()
            for row in abandoned:
                log.warning("closed abandoned %s execution %s (started %s)", row.job_name,
                            row.id, row.started_at.isoformat())
            counts = {"detected": len(recovered), "recovered": len(recovered),
                      "abandoned": len(abandoned)}
            result = {**counts,
                      "recovered_ids": [str(r.id) for r in recovered[:100]],
                      "abandoned_ids": [str(r.id) for r in abandoned[:100]]}
            await JobExecutionRepository(conn).finish(execution_id, "completed", result)
    except Exception as exc:
        await close_failed(engine, execution_id, f"{type(exc).__name__}: {exc}")
        raise TaskFailed(f"recover failed: {type(exc).__name__}", execution_id, exc) from exc
    log.info("recover: %d conversation(s) recovered, %d execution(s) abandoned",
             len(recovered), len(abandoned))
    return RunReport(task=JOB_NAME, status=RunStatus.COMPLETED, execution_id=str(execution_id),
                     started_at=started, finished_at=utc_now(), counts=counts)
