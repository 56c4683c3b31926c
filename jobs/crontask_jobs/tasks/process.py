"""process (FR-003, FR-004): run idle conversations through the pipeline, a bounded batch at a time.

Claim first, then work: one statement picks at most `batch_size` eligible conversations with
FOR UPDATE SKIP LOCKED and marks them `processing` with this run's execution id as owner, so
two parallel runs never take the same conversation and the deferred rest is never touched.
`--max-in-flight` caps `processing` across all runs and pods: the claim takes a transaction
advisory lock, counts what is in flight and claims only the difference, so concurrent claimers
cannot both see room for the same slot. (An asyncio.Semaphore bounds one process only: it is
what bounds this run's concurrency, `max_concurrent_pipelines`.)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crontask_contract.report import RunReport, RunStatus
from crontask_jobs.pipeline.engine import (
    Claim,
    ConversationOutcome,
    resolve_timeouts,
    run_conversation,
)
from crontask_jobs.pipeline.stage import Stage
from crontask_jobs.pipeline.stats import errors_json, fold_errors, fold_timings, timings_json
from crontask_jobs.repositories import JobExecutionRepository
from crontask_jobs.tasks.common import TaskFailed, close_failed, utc_now

log = logging.getLogger(__name__)

JOB_NAME: Final = "process"
MAX_CONCURRENT_PIPELINES: Final = 10
DEFAULT_IDLE_AFTER: Final = timedelta(minutes=15)
CLAIM_LOCK_KEY: Final = 0x6372_6F6E_636C_6D  # "cronclm"
MAX_RESULT_ERRORS: Final = 100


@dataclass(frozen=True)
class ProcessOptions:
    idle_after: timedelta = DEFAULT_IDLE_AFTER
    batch_size: int = MAX_CONCURRENT_PIPELINES
    max_concurrent_pipelines: int = MAX_CONCURRENT_PIPELINES
    max_in_flight: int | None = None
    stage_timeouts: Mapping[str, timedelta] = field(default_factory=dict)
    default_stage_timeout: timedelta | None = None


CLAIM_SQL: Final = sa.text("""
WITH picked AS (
    SELECT id
      FROM conversations
     WHERE status = 'active'
       AND last_message_at < now() - :idle_after
     ORDER BY last_message_at
     LIMIT :limit
       FOR UPDATE SKIP LOCKED
)
UPDATE conversations AS c
   SET status = 'processing',
       claimed_by = :owner,
       processing_started_at = now(),
       updated_at = now(),
       attempts = c.attempts + 1,
       failure_reason = NULL
  FROM picked
 WHERE c.id = picked.id
RETURNING c.id, c.user_id, c.last_message_at
""")
COUNT_ELIGIBLE: Final = sa.text(
    "SELECT count(*) FROM conversations"
    " WHERE status = 'active' AND last_message_at < now() - :idle_after"
)
COUNT_IN_FLIGHT: Final = sa.text("SELECT count(*) FROM conversations WHERE status = 'processing'")


async def claim(engine: AsyncEngine, owner: uuid.UUID, options: ProcessOptions) -> list[Claim]:
    async with engine.begin() as conn:
        limit = options.batch_size
        if options.max_in_flight is not None:
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": CLAIM_LOCK_KEY})
            in_flight = (await conn.execute(COUNT_IN_FLIGHT)).scalar_one()
            limit = max(0, min(limit, options.max_in_flight - in_flight))
            if limit < options.batch_size:
                log.info("max-in-flight %d: %d conversation(s) already processing, claiming "
                         "at most %d", options.max_in_flight, in_flight, limit)
        if limit == 0:
            return []
        rows = await conn.execute(CLAIM_SQL, {"idle_after": options.idle_after, "limit": limit,
                                              "owner": owner})
        return [Claim(r.id, r.user_id, r.last_message_at) for r in rows]


def build_result(claimed: int, deferred: int, outcomes: Sequence[ConversationOutcome]
                 ) -> tuple[dict[str, int], dict[str, Any]]:
    """The report's counts and the job_executions.result document (pure)."""
    results = [r for o in outcomes for r in o.results]
    counts = {
        "detected": claimed + deferred,
        "claimed": claimed,
        "processed": sum(o.outcome == "processed" for o in outcomes),
        "failed": sum(o.outcome == "failed" for o in outcomes),
        "deferred": deferred,
        "lost": sum(o.outcome == "lost" for o in outcomes),
    }
    errors = [
        {"conversation_id": str(o.conversation_id), "stage": r.stage, "message": r.error}
        for o in outcomes for r in o.results if r.error is not None
    ]
    failures = [{"conversation_id": str(o.conversation_id), "reason": o.failure}
                for o in outcomes if o.outcome == "failed"]
    document = {
        **counts,
        "stage_errors": errors_json(fold_errors(results)),
        "stage_timings": timings_json(fold_timings(results)),
        "errors": errors[:MAX_RESULT_ERRORS],
        "failures": failures[:MAX_RESULT_ERRORS],
    }
    return counts, document


async def run_process(engine: AsyncEngine, options: ProcessOptions,
                      stages: Sequence[Stage]) -> RunReport:
    started = utc_now()
    timeouts = resolve_timeouts(stages, options.stage_timeouts, options.default_stage_timeout)
    async with engine.begin() as conn:
        execution_id = await JobExecutionRepository(conn).start(JOB_NAME)
    try:
        claims = await claim(engine, execution_id, options)
        async with engine.connect() as conn:
            deferred = (await conn.execute(COUNT_ELIGIBLE,
                                           {"idle_after": options.idle_after})).scalar_one()
        if deferred:
            log.info("process: %d eligible conversation(s) deferred to a later run "
                     "(batch size %d)", deferred, options.batch_size)
        log.info("process: claimed %d conversation(s); running at most %d at once",
                 len(claims), options.max_concurrent_pipelines)

        semaphore = asyncio.Semaphore(options.max_concurrent_pipelines)

        async def one(c: Claim) -> ConversationOutcome:
            async with semaphore:
                return await run_conversation(engine, c, stages, timeouts, execution_id)

        outcomes = await asyncio.gather(*(one(c) for c in claims))
        counts, document = build_result(len(claims), deferred, outcomes)
        async with engine.begin() as conn:
            await JobExecutionRepository(conn).finish(execution_id, "completed", document)
    except Exception as exc:
        await close_failed(engine, execution_id, f"{type(exc).__name__}: {exc}")
        raise TaskFailed(f"process failed: {type(exc).__name__}", execution_id, exc) from exc
    results = [r for o in outcomes for r in o.results]
    log.info("process: %d processed, %d failed, %d deferred, %d lost to a newer owner",
             counts["processed"], counts["failed"], counts["deferred"], counts["lost"])
    return RunReport(task=JOB_NAME, status=RunStatus.COMPLETED, execution_id=str(execution_id),
                     started_at=started, finished_at=utc_now(), counts=counts,
                     stage_errors=fold_errors(results), stage_timings=fold_timings(results))
