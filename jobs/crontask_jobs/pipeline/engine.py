"""Running one claimed conversation through the stages, in one transaction.

Each stage gets a savepoint and a timeout. A non-critical failure rolls back to the savepoint
and the pipeline goes on; a critical one rolls the whole transaction back, so a conversation
ends either `processed` with every surviving stage's writes or `failed` with none.

The final status change is guarded by the owner token (`claimed_by` = this run's execution id
and status still `processing`): if `recover` failed the conversation meanwhile, or another
run re-claimed it, the guard matches nothing, this run's work is rolled back and the newer
outcome stands. The outcome is then `lost`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crontask_contract.durations import format_duration
from crontask_jobs.pipeline.stage import Stage, StageContext
from crontask_jobs.pipeline.stats import StageResult

log = logging.getLogger(__name__)

DEFAULT_STAGE_TIMEOUT: Final = timedelta(seconds=60)
Outcome = Literal["processed", "failed", "lost"]


@dataclass(frozen=True)
class Claim:
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    last_message_at: datetime


@dataclass
class ConversationOutcome:
    conversation_id: uuid.UUID
    outcome: Outcome
    results: list[StageResult] = field(default_factory=list)
    failure: str | None = None


def resolve_timeouts(stages: Sequence[Stage], overrides: Mapping[str, timedelta],
                     default: timedelta | None) -> dict[str, float]:
    """Per-stage flag, else the stage's own timeout, else the bare flag, else 60 s."""
    out: dict[str, float] = {}
    for stage in stages:
        chosen = overrides.get(stage.name) or stage.timeout or default or DEFAULT_STAGE_TIMEOUT
        out[stage.name] = chosen.total_seconds()
    return out


FINISH_PROCESSED: Final = sa.text("""
UPDATE conversations
   SET status = 'processed', processed_at = now(), updated_at = now(), failure_reason = NULL
 WHERE id = :id AND status = 'processing' AND claimed_by = :owner
""")
FINISH_FAILED: Final = sa.text("""
UPDATE conversations
   SET status = 'failed', updated_at = now(), failure_reason = :reason
 WHERE id = :id AND status = 'processing' AND claimed_by = :owner
""")


async def _run_stage(stage: Stage, ctx: StageContext, limit_s: float) -> StageResult:
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(limit_s):
            await stage.run(ctx)
    except TimeoutError:
        ms = (time.perf_counter() - t0) * 1000
        return StageResult(stage.name, ms, f"timed out after "
                           f"{format_duration(timedelta(seconds=limit_s))}", timed_out=True)
    except Exception as exc:
        ms = (time.perf_counter() - t0) * 1000
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return StageResult(stage.name, ms, message or type(exc).__name__)
    return StageResult(stage.name, (time.perf_counter() - t0) * 1000)


async def _stages(conn: AsyncConnection, claim: Claim, stages: Sequence[Stage],
                  timeouts: Mapping[str, float], owner: uuid.UUID,
                  out: ConversationOutcome) -> bool:
    """Run the stages inside the open transaction; False after a critical failure."""
    ctx = StageContext(claim.conversation_id, claim.user_id, claim.last_message_at, owner, conn)
    for stage in stages:
        savepoint = await conn.begin_nested()
        result = await _run_stage(stage, ctx, timeouts[stage.name])
        out.results.append(result)
        if result.error is None:
            await savepoint.commit()
            continue
        await savepoint.rollback()
        log.warning("conversation %s: stage %s %s: %s", claim.conversation_id, stage.name,
                    "failed (critical)" if stage.critical else "failed", result.error)
        if stage.critical:
            out.failure = f"stage {stage.name}: {result.error}"
            return False
    return True


async def _mark_failed(engine: AsyncEngine, claim: Claim, owner: uuid.UUID, reason: str) -> bool:
    async with engine.begin() as conn:
        res = await conn.execute(FINISH_FAILED, {"id": claim.conversation_id, "owner": owner,
                                                 "reason": reason[:2000]})
        return res.rowcount == 1


async def run_conversation(engine: AsyncEngine, claim: Claim, stages: Sequence[Stage],
                           timeouts: Mapping[str, float], owner: uuid.UUID) -> ConversationOutcome:
    out = ConversationOutcome(claim.conversation_id, "processed")
    try:
        async with engine.connect() as conn:
            await conn.begin()
            if await _stages(conn, claim, stages, timeouts, owner, out):
                res = await conn.execute(FINISH_PROCESSED,
                                         {"id": claim.conversation_id, "owner": owner})
                if res.rowcount == 1:
                    await conn.commit()
                    return out
                await conn.rollback()
                out.outcome = "lost"
                log.warning("conversation %s was recovered or re-claimed while this run "
                            "processed it: its newer outcome stands", claim.conversation_id)
                return out
            await conn.rollback()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the connection itself broke (e.g. a stage left it unusable)
        detail = str(exc).splitlines()[0] if str(exc) else ""
        out.failure = f"pipeline: {type(exc).__name__}: {detail}"
        log.warning("conversation %s: %s", claim.conversation_id, out.failure)
    marked = await _mark_failed(engine, claim, owner, out.failure or "")
    out.outcome = "failed" if marked else "lost"
    return out
