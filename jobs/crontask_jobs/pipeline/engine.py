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
the driver (psycopg) itself, in autocommit with explicit BEGIN and COMMIT (`Script`): the claim
with its COMMIT, the conversation's BEGIN and the first stage's limits travel in one message;
each later stage's savepoint and limits in one; the final update, with what the stages left
pending (a savepoint to release or roll back) and the COMMIT, in one, and the slot's next claim
with its opening rides on that same message (`claim_next`): one round trip per conversation
beyond the stages' own. The next claim is still taken only once the slot is free (its
conversation committed), and commits before the next conversation's transaction opens.
SQLAlchemy, which the stages use, is told nothing of these transactions: its own view (a
transaction it began for a stage's statement) is cleared after each conversation
(`SlotConnection.reset`) without reaching the driver (the engine is made with
`skip_autocommit_rollback`, and a slot's driver is in autocommit), so every conversation starts
as a fresh checkout would, even with the next conversation's transaction already open.
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
from typing import Any, Final, Literal

import psycopg
from psycopg import pq, sql
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


NOTHING_LEFT: Final = "nothing left"
"""What a next claim sent with a final message found when no conversation was eligible."""
NextClaim = Claim | Literal["nothing left"] | None
"""What came of the claim sent with a conversation's final message: the next conversation
(claimed, its transaction open), NOTHING_LEFT (the slot's connection left idle), or None when
none was sent or its answer never came (the conversation did not end with its final message,
or that message failed): the slot claims on its own then, and a claim whose commit it never
heard of is settled with the run's other claims."""


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


# The engine's own statements are composed once per run, with client-side literals (psycopg's
# sql.Literal, over the run's own typed values: its owner token, the stages' limits in
# milliseconds; a conversation's id as the database returned it), and sent as one
# simple-protocol message per round trip: psycopg's execute costs a large share of a
# conversation's Python time when fifty pipelines share one event loop, and its pipeline mode
# more still.
SET_STAGE_LIMITS: Final = sql.SQL("SELECT set_config('statement_timeout', {ms}, true),"
                                  " set_config('lock_timeout', {ms}, true)")
# Guarded by the owner token (migration 0004): raises LOST_SQLSTATE unless the row is still
# this run's, so the COMMIT sent after it never commits a lost conversation's writes. The row
# is ours unless recover or another run took it, in which case their short statement holds it
# at most briefly (the stage's lock_timeout bounds the wait).
FINISH_PROCESSED: Final = sql.SQL("SELECT crontask_finish_processed({id}, {owner})")
LOST_SQLSTATE: Final = "CT409"
FINISH_FAILED: Final = """
UPDATE conversations
   SET status = 'failed', updated_at = now(), failure_reason = %(reason)s
 WHERE id = %(id)s AND status = 'processing' AND claimed_by = %(owner)s
"""
SAVEPOINT: Final = b"SAVEPOINT crontask_stage"
RELEASE: Final = b"RELEASE SAVEPOINT crontask_stage"
ROLLBACK_TO: Final = b"ROLLBACK TO SAVEPOINT crontask_stage"
ENDED_TRANSACTION: Final = ("it ended the conversation's transaction (a commit or rollback of"
                             " its own): the pipeline owns it")


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
    the module's doc) and with the run's statements prepared, until `release`."""

    conn: AsyncConnection
    driver: psycopg.AsyncConnection[Any]
    script: Script
    prepare_threshold: int | None
    """The driver's own setting, put back by `release`."""

    @classmethod
    async def take(cls, conn: AsyncConnection, script: Script) -> SlotConnection:
        driver = await driver_of(conn)
        threshold = driver.prepare_threshold
        await driver.set_autocommit(True)
        # psycopg's own automatic preparing is off for the slot's life: once it has prepared
        # a statement of its own, a rollback (or a ROLLBACK TO SAVEPOINT in a message) makes it
        # DEALLOCATE ALL, which would take the run's prepared claim and final update with it.
        driver.prepare_threshold = None
        try:
            await send(driver, script.prepare)
        except BaseException:
            await conn.invalidate()  # half set up: the pool must not lend it to anyone else
            raise
        return cls(conn, driver, script, threshold)

    async def reset(self) -> bool:
        """After a conversation: clear SQLAlchemy's view of the transaction (a stage's
        statement made it begin one). Its rollback never reaches the driver, which is in
        autocommit (`skip_autocommit_rollback`): the driver's transaction is the engine's, over
        or already the next conversation's. False if the connection cannot be trusted any
        more."""
        try:
            if self.conn.in_transaction() and not self.conn.invalidated:
                await self.conn.rollback()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("resetting a pipeline connection: %s", type(exc).__name__)
            return False
        return not self.conn.invalidated and not self.driver.closed

    async def release(self) -> None:
        """Back as the pool lent it before the pool lends it to anyone else (the run's
        bookkeeping relies on implicit transactions); one that cannot be put back is
        discarded."""
        try:
            if not self.conn.invalidated and not self.driver.closed:
                await self.driver.rollback()
                await send(self.driver, self.script.deallocate)
                await self.driver.set_autocommit(False)
                self.driver.prepare_threshold = self.prepare_threshold
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.debug("releasing a pipeline connection: %s", type(exc).__name__)
        if not self.conn.invalidated:
            await self.conn.invalidate()


def message(*statements: bytes) -> bytes:
    """Statements as one simple-protocol message: run in order, the first error stops it."""
    return b"; ".join(s for s in statements if s)


@dataclass(frozen=True)
class Script:
    """The engine's own messages for one run, composed once (they differ only by run). The two
    that run once per conversation, the claim and the final update, are prepared on each
    slot's session (`prepare`, undone by `deallocate`): the server plans them once per session,
    not once per conversation (planning the claim cost more than running it)."""

    owner: uuid.UUID
    prepare: bytes
    deallocate: bytes
    claim: bytes
    """The claim alone (for a claim inside a transaction of its own)."""
    claim_and_open: bytes
    """BEGIN, the claim, COMMIT and the opening, in one message. The BEGIN and COMMIT are
    explicit: statements of one message share one implicit transaction, which the opening's
    BEGIN would extend over the claim, and the claim must commit before the conversation's
    transaction opens. The claim's row is its second result (`claimed_row`)."""
    opening: bytes
    """BEGIN and the first stage's limits: what `run_conversation` expects already sent."""
    before_stage: tuple[bytes, ...]
    """Per stage, what precedes it: its savepoint (a non-critical stage) and its limits (the
    first stage's came with the opening)."""
    finish_prefix: bytes

    @classmethod
    def of(cls, owner: uuid.UUID, claim: sql.Composable, stages: Sequence[Stage],
           timeouts: Mapping[str, float]) -> Script:
        """`claim`: the task's claim statement (returns the Claim's columns, or no row)."""
        def limits(stage: Stage) -> bytes:
            ms = milliseconds(timedelta(seconds=timeouts[stage.name] + CANCEL_GRACE_SECONDS))
            return SET_STAGE_LIMITS.format(ms=sql.Literal(ms)).as_bytes(None)

        def compose(text: str, **parts: sql.Composable) -> bytes:
            return sql.SQL(text).format(**parts).as_bytes(None)

        claim_name = sql.Identifier(f"crontask_claim_{owner.hex}")
        finish_name = sql.Identifier(f"crontask_finish_{owner.hex}")
        prepare = message(
            compose("PREPARE {name} AS {claim}", name=claim_name, claim=claim),
            compose("PREPARE {name} (uuid) AS {finish}", name=finish_name,
                    finish=FINISH_PROCESSED.format(id=sql.SQL("$1"), owner=sql.Literal(owner))))
        deallocate = message(compose("DEALLOCATE {name}", name=claim_name),
                             compose("DEALLOCATE {name}", name=finish_name))
        execute_claim = compose("EXECUTE {name}", name=claim_name)
        opening = message(b"BEGIN", limits(stages[0]) if stages else b"")
        before = tuple(message(b"" if stage.critical else SAVEPOINT,
                               limits(stage) if index else b"")
                       for index, stage in enumerate(stages))
        return cls(owner, prepare, deallocate, execute_claim,
                   message(b"BEGIN", execute_claim, b"COMMIT", opening), opening, before,
                   compose("EXECUTE {name}", name=finish_name))

    def finish(self, conversation_id: uuid.UUID, pending: Sequence[bytes], *,
               claim_next: bool = False) -> bytes:
        """What the stages left pending, the guarded final update, and the COMMIT; with
        `claim_next`, then the next claim and its opening (`claim_and_open`), which the first
        error (a lost conversation's among them) keeps from running."""
        return message(*pending, b"%s(%s)" % (self.finish_prefix, sql.Literal(
            conversation_id).as_bytes(None)), b"COMMIT",
            self.claim_and_open if claim_next else b"")


FINISH_RESULTS: Final = 2
"""Results of a final message after what the stages left pending: the update, the COMMIT."""


async def claimed_row(cursor: psycopg.AsyncCursor[Any], before: int = 0) -> Any:
    """The claim's row (or None) from a message that ended with `Script.claim_and_open`, after
    `before` results of statements sent ahead of it."""
    for _ in range(before + 1):  # and past the claim's BEGIN
        cursor.nextset()
    return await cursor.fetchone()


async def send(driver: psycopg.AsyncConnection[Any], text: bytes) -> psycopg.AsyncCursor[Any]:
    """One message, one round trip; the cursor holds each statement's result in turn."""
    return await driver.execute(text, prepare=False)


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
                  timeouts: Mapping[str, float], out: ConversationOutcome,
                  pending: list[bytes]) -> bool:
    """Run the stages inside the open transaction; False after a critical failure. What a
    stage leaves to send (its savepoint's release or rollback) goes into `pending`, sent
    with the next round trip."""
    conn, driver, script = slot.conn, slot.driver, slot.script
    ctx = StageContext(claim.conversation_id, claim.user_id, claim.last_message_at,
                       script.owner, conn)
    for stage, before in zip(stages, script.before_stage, strict=True):
        limit_s = timeouts[stage.name]
        if before or pending:
            await send(driver, message(*pending, before))
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
                pending.append(RELEASE)
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
        pending.extend([ROLLBACK_TO, RELEASE])
    return True


def _transaction_gone(driver: psycopg.AsyncConnection[Any]) -> bool:
    """A stage committed or rolled back the conversation's transaction itself."""
    return driver.pgconn.transaction_status == pq.TransactionStatus.IDLE


async def run_conversation(slot: SlotConnection, claim: Claim, stages: Sequence[Stage],
                           timeouts: Mapping[str, float], *, claim_next: bool = False
                           ) -> tuple[ConversationOutcome, NextClaim]:
    """The conversation's outcome, its transaction already open (`Script.opening`, sent with
    its claim), and, with `claim_next`, what came of the next claim sent with its final message;
    the caller resets the slot afterwards. Never raises, except when the run itself is
    cancelled."""
    conn, driver, script = slot.conn, slot.driver, slot.script
    out = ConversationOutcome(claim.conversation_id, "processed")
    pending: list[bytes] = []
    chained = False
    try:
        if not await _stages(slot, claim, stages, timeouts, out, pending):
            return await _fail(driver, claim, script.owner, out), None
        try:
            chained = claim_next
            cursor = await send(driver, script.finish(claim.conversation_id, pending,
                                                      claim_next=claim_next))
        except psycopg.Error as exc:
            if exc.sqlstate != LOST_SQLSTATE:
                raise
            await driver.rollback()
            out.outcome = "lost"
            log.warning("conversation %s was recovered or re-claimed while this run "
                        "processed it: its newer outcome stands", claim.conversation_id)
            return out, None
        if not claim_next:
            return out, None
        row = await claimed_row(cursor, len(pending) + FINISH_RESULTS)
        if row is None:
            await driver.rollback()  # the opening, with nothing to do
            return out, NOTHING_LEFT
        return out, Claim(row[0], row[1], row[2])
    except asyncio.CancelledError:
        raise
    except _ConnectionGone as gone:
        return _unresolved(out, gone.failure, gone.fault,
                           "active" if gone.fault else "failed"), None
    except Exception as exc:
        fault = classify(exc)
        failure = out.failure or safe_text(f"pipeline: {fault.reason}: {fault.message}")
        if fault.lost_connection or conn.invalidated or driver.closed:
            return _unresolved(out, failure, fault if fault.lost_connection else None,
                               "failed" if out.failure else "active"), None
        out.failure = failure
        try:
            return await _fail(driver, claim, script.owner, out,
                               may_have_committed=chained), None
        except asyncio.CancelledError:
            raise
        except Exception as again:
            second = classify(again)
            return _unresolved(out, failure, second if second.lost_connection else None,
                               "failed"), None


async def _fail(driver: psycopg.AsyncConnection[Any], claim: Claim, owner: uuid.UUID,
                out: ConversationOutcome, *, may_have_committed: bool = False
                ) -> ConversationOutcome:
    """Roll back what the conversation wrote, then mark it failed: one statement, in
    autocommit. `may_have_committed`: the error came from a final message that also carried
    the next claim, so it may have come after the conversation's COMMIT, from the claim; the
    database then says the conversation is processed, and that is its outcome."""
    await driver.rollback()
    marked = await driver.execute(FINISH_FAILED, {"id": claim.conversation_id, "owner": owner,
                                                  "reason": out.failure or ""})
    if marked.rowcount == 1:
        out.outcome = "failed"
    elif may_have_committed and await _processed_by(driver, claim, owner):
        log.warning("conversation %s: processed; the next claim sent with it failed: %s",
                    claim.conversation_id, out.failure)
        out.outcome, out.failure = "processed", None
    else:
        out.outcome = "lost"
    return out


PROCESSED_BY: Final = """
SELECT 1 FROM conversations WHERE id = %(id)s AND status = 'processed' AND claimed_by = %(owner)s
"""


async def _processed_by(driver: psycopg.AsyncConnection[Any], claim: Claim,
                        owner: uuid.UUID) -> bool:
    found = await driver.execute(PROCESSED_BY, {"id": claim.conversation_id, "owner": owner})
    return await found.fetchone() is not None


def _unresolved(out: ConversationOutcome, failure: str, fault: Fault | None,
                intent: Intent) -> ConversationOutcome:
    out.outcome, out.failure, out.fault, out.intent = "unresolved", failure, fault, intent
    log.warning("conversation %s: %s (its claim is settled at the end of the run)",
                out.conversation_id, failure)
    return out
