"""Running one claimed conversation through the stages, in one transaction on one connection.

Each stage gets a savepoint and a time limit. A non-critical failure rolls back to the savepoint
and the pipeline goes on; a critical one rolls the whole transaction back, so a conversation
ends either `processed` with every surviving stage's writes or `failed` with none.

A stage's time limit is enforced without breaking the connection. The stage runs as its own
task, and when its limit passes while a statement is running, the statement is cancelled *on
the server* (a cancel request), so the stage sees an ordinary error, the savepoint rolls back
and the pipeline goes on. (Cancelling the asyncio task mid-statement instead would make
SQLAlchemy discard the connection and, with it, every other stage's writes.) A stage waiting
on anything else is cancelled as a task at once; one that ignores the server's cancel and
keeps running past a short grace is cancelled as a task too, and if that costs the
connection, the conversation fails with that reason. Inside the stage's savepoint the server's
`statement_timeout` and `lock_timeout` are the limit plus the grace: a backstop should the
cancel request be lost, and the stage's own bound on lock waits (not the session's).

The final status change is guarded by the owner token (`claimed_by` = this run's execution id
and status still `processing`): if `recover` failed the conversation meanwhile, or another
run re-claimed it, the guard matches nothing, this run's work is rolled back and the newer
outcome stands (`lost`). When the connection itself fails (the server ended the session, a
restart, a broken socket), nothing of the conversation was committed: the outcome is
`unresolved` with what should become of the claim, which the run settles on a new connection.

Round trips. A pipeline slot keeps its connection, and the engine drives its transactions on
the driver (psycopg) itself, in autocommit with an explicit BEGIN: the claim, the BEGIN and
the first stage's limits travel in one round trip (`opening`), each later stage's savepoint
and limits in one, the final update with what the stages left pending (a savepoint to release
or roll back) in one, then the COMMIT. SQLAlchemy, which the stages use, is told nothing of
these transactions: its own view (a transaction it began for a stage's statement) is cleared
after each conversation, so every conversation starts as a fresh checkout would.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal, LiteralString

import psycopg
from psycopg import pq
from sqlalchemy.ext.asyncio import AsyncConnection

from crontask_contract.durations import format_duration
from crontask_jobs.faults import Fault, classify
from crontask_jobs.messages import safe_text
from crontask_jobs.pipeline.stage import Stage, StageContext, StageError
from crontask_jobs.pipeline.stats import StageResult
from crontask_jobs.session import milliseconds

log = logging.getLogger(__name__)

DEFAULT_STAGE_TIMEOUT: Final = timedelta(seconds=60)
CANCEL_GRACE_SECONDS: Final = 1.0
"""How long a stage has, after its statement was cancelled on the server, to give up."""

Outcome = Literal["processed", "failed", "lost", "handed_back", "unresolved"]
Intent = Literal["active", "failed"]


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
    """Why it failed or was handed back: what its `failure_reason` says."""
    fault: Fault | None = None
    """The connection fault that cut it short, if one did."""
    intent: Intent | None = None
    """For `unresolved`: what the run should make of the claim (hand it back, or fail it)."""


def resolve_timeouts(stages: Sequence[Stage], overrides: Mapping[str, timedelta],
                     default: timedelta | None) -> dict[str, float]:
    """Per-stage flag, else the stage's own timeout, else the bare flag, else 60 s."""
    out: dict[str, float] = {}
    for stage in stages:
        chosen = next(t for t in (overrides.get(stage.name), stage.timeout, default,
                                  DEFAULT_STAGE_TIMEOUT) if t is not None)
        if chosen <= timedelta(0):
            raise ValueError(f"stage {stage.name!r} has a timeout that is not positive")
        out[stage.name] = chosen.total_seconds()
    return out


# The engine's own statements go to the driver directly (psycopg placeholders): they run once
# or twice per stage and per conversation, and SQLAlchemy's execute costs three to four times
# the driver's in Python time, which at 50 pipelines on one event loop is most of the run.
SET_STAGE_LIMITS: Final = ("SELECT set_config('statement_timeout', %(ms)s, true),"
                           " set_config('lock_timeout', %(ms)s, true)")
# Both guarded by the owner token; the row is ours unless recover or another run took it, in
# which case their short statement holds it at most briefly (the stage's lock_timeout bounds it).
FINISH_PROCESSED: Final = """
UPDATE conversations
   SET status = 'processed', processed_at = now(), updated_at = now(), failure_reason = NULL
 WHERE id = %(id)s AND status = 'processing' AND claimed_by = %(owner)s
"""
FINISH_FAILED: Final = """
UPDATE conversations
   SET status = 'failed', updated_at = now(), failure_reason = %(reason)s
 WHERE id = %(id)s AND status = 'processing' AND claimed_by = %(owner)s
"""


SAVEPOINT: Final = "SAVEPOINT crontask_stage"
RELEASE: Final = "RELEASE SAVEPOINT crontask_stage"
ROLLBACK_TO: Final = "ROLLBACK TO SAVEPOINT crontask_stage"
ENDED_TRANSACTION: Final = ("it ended the conversation's transaction (a commit or rollback of"
                             " its own): the pipeline owns it")
Statement = tuple[LiteralString, Mapping[str, Any] | None]


async def driver_of(conn: AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """The psycopg connection under a SQLAlchemy one (for the engine's own statements)."""
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise TypeError("the pipeline needs the psycopg async driver")
    return driver


@dataclass(frozen=True)
class SlotConnection:
    """A pipeline slot's connection: SQLAlchemy's, which the stages use, and the psycopg
    connection under it, on which the engine sends its own statements, in autocommit (see
    the module's doc) until `release`."""

    conn: AsyncConnection
    driver: psycopg.AsyncConnection[Any]

    @classmethod
    async def take(cls, conn: AsyncConnection) -> SlotConnection:
        driver = await driver_of(conn)
        await driver.set_autocommit(True)
        return cls(conn, driver)

    async def release(self) -> None:
        """Back to the driver's default before the pool lends the connection to anyone else
        (the run's bookkeeping relies on implicit transactions); one that cannot be put back
        is discarded."""
        try:
            if not self.conn.invalidated and not self.driver.closed:
                await self.driver.rollback()
                await self.driver.set_autocommit(False)
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("releasing a pipeline connection: %s", type(exc).__name__)
        if not self.conn.invalidated:
            await self.conn.invalidate()


def stage_limits(limit_s: float) -> Statement:
    """The stage's own statement_timeout and lock_timeout, for its transaction only."""
    return SET_STAGE_LIMITS, {"ms": milliseconds(
        timedelta(seconds=limit_s + CANCEL_GRACE_SECONDS))}


def opening(stages: Sequence[Stage], timeouts: Mapping[str, float]) -> list[Statement]:
    """What opens a conversation's transaction, sent in the claim's round trip: BEGIN and the
    first stage's limits (`run_conversation` expects both)."""
    return [("BEGIN", None), stage_limits(timeouts[stages[0].name])] if stages else [
        ("BEGIN", None)]


async def send(driver: psycopg.AsyncConnection[Any],
               statements: Sequence[Statement]) -> list[psycopg.AsyncCursor[Any]]:
    """Statements in one round trip (psycopg's pipeline mode), their cursors in order; the
    first error raises once all were sent, and the ones after it are not run."""
    if len(statements) == 1:
        sql, params = statements[0]
        return [await driver.execute(sql, params)]
    async with driver.pipeline():
        return [await driver.execute(sql, params) for sql, params in statements]


class _ConnectionGone(Exception):
    """A stage's failure took the conversation's connection (and transaction) with it."""

    def __init__(self, failure: str, fault: Fault | None) -> None:
        super().__init__(failure)
        self.failure = failure
        self.fault = fault


def _stage_message(exc: BaseException) -> str:
    if isinstance(exc, StageError):
        return safe_text(exc) or "StageError"
    fault = classify(exc)
    if fault.reason != "error":
        return safe_text(f"{fault.reason}: {fault.message}")
    return fault.message or type(exc).__name__


async def _cancel_on_server(driver: Any) -> bool:
    """Ask the server to cancel the statement running on this connection; False when no
    statement is running (the stage is waiting on something else: it is safe to cancel)."""
    try:
        if driver.pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
            return False
        await driver.cancel_safe(timeout=CANCEL_GRACE_SECONDS)
    except Exception as exc:  # the stage is cancelled as a task after the grace anyway
        log.debug("cancel request failed: %s", type(exc).__name__)
    return True


@dataclass(frozen=True)
class _StageRun:
    result: StageResult
    error: BaseException | None = None
    runaway: bool = False
    """The stage ignored even the cancellation of its task: its connection cannot be trusted."""


async def _stop(task: asyncio.Future[Any]) -> bool:
    """Cancel the stage's task; False if it refuses to end within the grace."""
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
    return bool(done)


async def _run_stage(stage: Stage, ctx: StageContext, limit_s: float, driver: Any) -> _StageRun:
    t0 = time.perf_counter()
    try:
        started = stage.run(ctx)
        if not inspect.isawaitable(started):
            raise TypeError(f"stage {stage.name!r} is not an async function")
    except Exception as not_started:
        return _StageRun(StageResult(stage.name, 0.0, _stage_message(not_started)), not_started)
    task = asyncio.ensure_future(started)
    timed_out = runaway = False
    try:
        done, _ = await asyncio.wait({task}, timeout=limit_s)
        if not done:
            timed_out = True
            if await _cancel_on_server(driver):
                done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE_SECONDS)
            if not done:
                runaway = not await _stop(task)
    except asyncio.CancelledError:
        await _stop(task)
        raise
    elapsed_ms = (time.perf_counter() - t0) * 1000
    exc = None if not task.done() or task.cancelled() else task.exception()
    if timed_out:
        limit = format_duration(timedelta(seconds=limit_s))
        return _StageRun(StageResult(stage.name, elapsed_ms, f"timed out after {limit}"), exc,
                         runaway)
    if exc is None:
        return _StageRun(StageResult(stage.name, elapsed_ms))
    return _StageRun(StageResult(stage.name, elapsed_ms, _stage_message(exc)), exc)


async def _stages(slot: SlotConnection, claim: Claim, stages: Sequence[Stage],
                  timeouts: Mapping[str, float], owner: uuid.UUID,
                  out: ConversationOutcome, pending: list[Statement]) -> bool:
    """Run the stages inside the open transaction; False after a critical failure. What a
    stage leaves to send (its savepoint's release or rollback) goes into `pending`, sent
    with the next round trip."""
    conn, driver = slot.conn, slot.driver
    ctx = StageContext(claim.conversation_id, claim.user_id, claim.last_message_at, owner, conn)
    for index, stage in enumerate(stages):
        limit_s = timeouts[stage.name]
        # A critical stage's failure rolls back the whole conversation: no savepoint needed.
        if not stage.critical:
            pending.append((SAVEPOINT, None))
        if index > 0:  # the first stage's limits came with the claim
            pending.append(stage_limits(limit_s))
        if pending:
            await send(driver, pending)
            pending.clear()
        run = await _run_stage(stage, ctx, limit_s, driver)
        result = run.result
        if not run.runaway and _transaction_gone(driver):
            # Its writes may be committed already; what follows must not run outside the
            # transaction, and the conversation is not `processed`.
            result = StageResult(stage.name, result.elapsed_ms, ENDED_TRANSACTION)
            out.results.append(result)
            out.failure = safe_text(f"stage {stage.name}: {ENDED_TRANSACTION}")
            log.warning("conversation %s: stage %s %s", claim.conversation_id, stage.name,
                        ENDED_TRANSACTION)
            return False
        out.results.append(result)
        if result.error is None:
            if not stage.critical:
                pending.append((RELEASE, None))
            continue
        fault = classify(run.error) if run.error is not None else None
        lost = fault if fault is not None and fault.lost_connection else None
        if run.runaway:
            await conn.invalidate()  # a task still holds it: nobody else may use it
        if lost is not None or conn.invalidated:
            failure = f"stage {stage.name}: {result.error}"
            if lost is None:
                failure += " (the stage did not stop, so its connection was closed)"
            raise _ConnectionGone(safe_text(failure), lost)
        log.warning("conversation %s: stage %s %s: %s", claim.conversation_id, stage.name,
                    "failed (critical)" if stage.critical else "failed", result.error)
        if stage.critical:
            out.failure = safe_text(f"stage {stage.name}: {result.error}")
            return False
        pending.extend([(ROLLBACK_TO, None), (RELEASE, None)])
    return True


def _transaction_gone(driver: psycopg.AsyncConnection[Any]) -> bool:
    """A stage committed or rolled back the conversation's transaction itself."""
    return driver.pgconn.transaction_status == pq.TransactionStatus.IDLE


async def run_conversation(slot: SlotConnection, claim: Claim, stages: Sequence[Stage],
                           timeouts: Mapping[str, float],
                           owner: uuid.UUID) -> ConversationOutcome:
    """The conversation's outcome, its transaction already open (`opening`, sent with the
    claim). Never raises, except when the run itself is cancelled."""
    conn, driver = slot.conn, slot.driver
    out = ConversationOutcome(claim.conversation_id, "processed")
    pending: list[Statement] = []
    try:
        try:
            if await _stages(slot, claim, stages, timeouts, owner, out, pending):
                finished = (await send(driver, [*pending, (FINISH_PROCESSED, {
                    "id": claim.conversation_id, "owner": owner})]))[-1]
                if finished.rowcount == 1:
                    await driver.commit()
                    return out
                await driver.rollback()
                out.outcome = "lost"
                log.warning("conversation %s was recovered or re-claimed while this run "
                            "processed it: its newer outcome stands", claim.conversation_id)
                return out
            await driver.rollback()
            return await _fail(driver, claim, owner, out)
        finally:
            if conn.in_transaction() and not conn.invalidated:
                await conn.rollback()  # SQLAlchemy's view only: the driver's is closed
    except asyncio.CancelledError:
        raise
    except _ConnectionGone as gone:
        return _unresolved(out, gone.failure, gone.fault, "active" if gone.fault else "failed")
    except Exception as exc:
        fault = classify(exc)
        failure = out.failure or safe_text(f"pipeline: {fault.reason}: {fault.message}")
        if fault.lost_connection or conn.invalidated or driver.closed:
            return _unresolved(out, failure, fault if fault.lost_connection else None,
                               "failed" if out.failure else "active")
        out.failure = failure
        try:
            await driver.rollback()
            if conn.in_transaction():
                await conn.rollback()
            return await _fail(driver, claim, owner, out)
        except asyncio.CancelledError:
            raise
        except Exception as again:
            second = classify(again)
            return _unresolved(out, failure, second if second.lost_connection else None,
                               "failed")


async def _fail(driver: psycopg.AsyncConnection[Any], claim: Claim, owner: uuid.UUID,
                out: ConversationOutcome) -> ConversationOutcome:
    """Mark it failed: one statement, in autocommit."""
    marked = await driver.execute(FINISH_FAILED, {"id": claim.conversation_id, "owner": owner,
                                                  "reason": out.failure or ""})
    out.outcome = "failed" if marked.rowcount == 1 else "lost"
    return out


def _unresolved(out: ConversationOutcome, failure: str, fault: Fault | None,
                intent: Intent) -> ConversationOutcome:
    out.outcome, out.failure, out.fault, out.intent = "unresolved", failure, fault, intent
    log.warning("conversation %s: %s (its claim is settled at the end of the run)",
                out.conversation_id, failure)
    return out
