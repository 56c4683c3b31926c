"""process (FR-003, FR-004): run idle conversations through the pipeline, a bounded batch at a time.

`--max-concurrent-pipelines` workers share the run's `--batch-size`. A worker claims one
conversation only when it is free to run it (one short transaction: `FOR NO KEY UPDATE SKIP
LOCKED`, status `processing`, this run's execution id as owner), runs it, and claims the
next in the message that commits the finished one (after its COMMIT): no claim waits in a
queue, so `recover` never fails a conversation whose pipeline has not started, and two
parallel runs never take the same conversation. `--max-in-flight` caps `processing` across
all runs and pods: each claim takes a transaction advisory lock, counts what is in flight
and claims only below the cap (those claims travel on their own). The engine's pool holds
exactly one connection per worker plus one for the run's own bookkeeping. A run first sets up
every worker's connection (taken from the pool, the run's statements prepared; a few at a
time): the run's fixed start, kept apart from its work. Then the workers start claiming a few
at a time (`pipeline.ramp`), so that their round trips do not all land at once.

Faults stay with the conversation they hit. A worker that cannot connect (the server refuses,
`max_connections` is reached) stops; the others go on. A conversation whose connection fails
mid-pipeline (its backend terminated, the server restarted) committed nothing; at the end of
the run every claim still `processing` under this run's owner token is settled in one
transaction, retried while the server comes back: handed back to `active` (or `failed` after
MAX_ATTEMPTS claims, or when its pipeline had already decided so), with the reason in
`failure_reason`. The execution row is closed in the same transaction. A run that lost
conversations to such faults reports `failed` with the fault's reason, and its counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crontask_contract.report import RunReport, RunStatus
from crontask_jobs.db import connection
from crontask_jobs.faults import Fault, classify
from crontask_jobs.messages import safe_text
from crontask_jobs.pipeline.engine import (
    NOTHING_LEFT,
    Claim,
    ConversationOutcome,
    Script,
    SlotConnection,
    claimed_row,
    resolve_timeouts,
    run_conversation,
    send,
)
from crontask_jobs.pipeline.ramp import StartRamp
from crontask_jobs.pipeline.stage import Stage
from crontask_jobs.pipeline.stats import fold_errors, fold_timings
from crontask_jobs.repositories import JobExecutionRepository
from crontask_jobs.tasks.common import (
    TERMINATED,
    execution_result,
    retrying,
    utc_now,
)

log = logging.getLogger(__name__)

JOB_NAME: Final = "process"
MAX_CONCURRENT_PIPELINES: Final = 10
DEFAULT_IDLE_AFTER: Final = timedelta(minutes=15)
CLAIM_LOCK_KEY: Final = 0x6372_6F6E_636C_6D  # "cronclm"
MAX_RESULT_ERRORS: Final = 100
SET_UP_AT_ONCE: Final = 8
"""Slot connections set up at once at the start of a run: fifty new sessions at once would reach
the server in one burst."""
SET_UP_WAIT_S: Final = 0.25
"""How long a slot whose connection is ready waits for the others' before it claims: a slot slow
to connect (up to connect_timeout) must not hold the run back."""
MAX_ATTEMPTS: Final = 5
"""A conversation handed back this many times is failed instead: a poison conversation must
not take a pipeline slot (and perhaps a backend) in every run forever."""


@dataclass(frozen=True)
class ProcessOptions:
    idle_after: timedelta = DEFAULT_IDLE_AFTER
    batch_size: int = MAX_CONCURRENT_PIPELINES
    max_concurrent_pipelines: int = MAX_CONCURRENT_PIPELINES
    max_in_flight: int | None = None
    stage_timeouts: Mapping[str, timedelta] = field(default_factory=dict)
    default_stage_timeout: timedelta | None = None


# Lock policy: SKIP LOCKED. A row another run is claiming (or a pipeline holds) is simply not
# ours to take; the next row will do, and the skipped one stays eligible. NO KEY UPDATE (no key
# changes) leaves foreign-key checks alone: a message being added to it is not blocked.
# Composed once per run and sent to the driver directly, as the pipeline engine's own
# statements are (see engine.py): it runs once per conversation, in the conversation's first
# round trip.
CLAIM_ONE: Final = sql.SQL("""
WITH picked AS (
    SELECT id
      FROM conversations
     WHERE status = 'active'
       AND last_message_at < now() - {idle_after}
     ORDER BY last_message_at
     LIMIT 1
       FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE conversations AS c
   SET status = 'processing',
       claimed_by = {owner},
       processing_started_at = now(),
       updated_at = now(),
       attempts = c.attempts + 1,
       failure_reason = NULL
  FROM picked
 WHERE c.id = picked.id
RETURNING c.id, c.user_id, c.last_message_at
""")
# Lock policy: waits, bounded by the session's lock_timeout (5 s), for other claimers' claim
# transactions, which last milliseconds; a claimer frozen inside one is disconnected by
# idle_in_transaction_session_timeout.
LOCK_CLAIMS: Final = "SELECT pg_advisory_xact_lock(%(k)s)"
COUNT_IN_FLIGHT: Final = "SELECT count(*) FROM conversations WHERE status = 'processing'"
COUNT_ELIGIBLE: Final = sa.text(
    "SELECT count(*) FROM conversations"
    " WHERE status = 'active' AND last_message_at < now() - :idle_after"
)
# Settling claims at the end of the run. Lock policy: these rows are this run's own (owner
# token); only recover's short statement can hold one, so they wait, bounded by lock_timeout,
# and the whole settlement is retried.
SETTLE_UNRESOLVED: Final = sa.text("""
UPDATE conversations AS c
   SET status = CASE WHEN i.intent = 'failed' OR c.attempts >= :max_attempts
                     THEN 'failed' ELSE 'active' END,
       failure_reason = CASE WHEN i.intent <> 'failed' AND c.attempts >= :max_attempts
                             THEN 'gave up after ' || c.attempts || ' attempts: ' || i.reason
                             ELSE i.reason END,
       updated_at = now()
  FROM unnest(CAST(:ids AS uuid[]), CAST(:intents AS text[]), CAST(:reasons AS text[]))
       AS i (id, intent, reason)
 WHERE c.id = i.id AND c.status = 'processing' AND c.claimed_by = :owner
RETURNING c.id, c.status
""")
SETTLE_LEFTOVERS: Final = sa.text("""
UPDATE conversations
   SET status = 'active', updated_at = now(), failure_reason = :reason
 WHERE status = 'processing' AND claimed_by = :owner
RETURNING id, status
""")
LEFTOVER_REASON: Final = "handed back: the run could not tell whether its claim had committed"
TERMINATED_REASON: Final = "handed back: the run was terminated while it worked on it"
FINAL_STATES: Final = sa.text(
    "SELECT id, status, claimed_by FROM conversations WHERE id = ANY(CAST(:ids AS uuid[]))")


def claim_statement(owner: uuid.UUID, options: ProcessOptions) -> sql.Composed:
    """CLAIM_ONE for this run (its values are the run's own, so it is composed once)."""
    return CLAIM_ONE.format(idle_after=sql.Literal(options.idle_after),
                            owner=sql.Literal(owner))


async def claim_one(slot: SlotConnection, options: ProcessOptions) -> Claim | None:
    """Claim the oldest eligible conversation, or None (nothing eligible, or the cap is met).
    The claim commits before the conversation's transaction opens: the claim, its COMMIT and
    the opening in one message, or with --max-in-flight one transaction that counts under the
    claim lock first."""
    driver, script = slot.driver, slot.script
    if options.max_in_flight is None:
        row = await claimed_row(await send(driver, script.claim_and_open))
    else:
        async with driver.transaction():
            await driver.execute(LOCK_CLAIMS, {"k": CLAIM_LOCK_KEY})
            counted = await (await driver.execute(COUNT_IN_FLIGHT)).fetchone()
            in_flight = counted[0] if counted else 0
            if in_flight >= options.max_in_flight:
                log.info("max-in-flight %d reached (%d processing): a pipeline slot stops",
                         options.max_in_flight, in_flight)
                return None
            row = await (await send(driver, script.claim)).fetchone()
        if row is not None:
            await send(driver, script.opening)
    if row is None:
        await driver.rollback()  # the transaction the opening began, with nothing to do
        return None
    return Claim(row[0], row[1], row[2])


Taken = tuple[AsyncExitStack, SlotConnection]
"""A slot's connection, with the stack that gives it back."""


class SetUp:
    """The slots' connections, set up a few at a time before any claim (the run's fixed start,
    kept apart from its work). One event loop: no locks needed."""

    def __init__(self, slots: int, at_once: int = SET_UP_AT_ONCE) -> None:
        self.gate = asyncio.Semaphore(at_once)
        self.all_done = asyncio.Event()
        self._left = slots

    def one_done(self) -> None:
        """A slot's set-up ended, with a connection or without."""
        self._left -= 1
        if self._left <= 0:
            self.all_done.set()


@dataclass
class _Run:
    """What the workers of one run share (one event loop: no locks needed)."""

    engine: AsyncEngine
    options: ProcessOptions
    stages: Sequence[Stage]
    timeouts: Mapping[str, float]
    budget: int
    script: Script
    claimed: set[uuid.UUID] = field(default_factory=set)
    outcomes: list[ConversationOutcome] = field(default_factory=list)
    worker_faults: list[Fault] = field(default_factory=list)
    workers_finished: int = 0
    """Workers that stopped because the batch or the queue ran out (not because of a fault)."""
    started: float = field(default_factory=time.monotonic)
    first_claim: float | None = None
    """When the first claim was sent: what came before is the run's fixed start."""
    ramped: float | None = None
    """When the last slot got under way (`StartRamp.done_at`)."""
    last_outcome: float | None = None
    """When the last conversation ended: what comes after is the run's fixed end."""

    async def take(self) -> Taken:
        """A connection for a slot, the run's statements prepared on it; given back (as the
        pool lent it) by closing the stack."""
        held = AsyncExitStack()
        try:
            slot = await SlotConnection.take(
                await held.enter_async_context(connection(self.engine)), self.script)
        except BaseException:
            await held.aclose()
            raise
        held.push_async_callback(slot.release)
        return held, slot

    async def reopen(self, claim: Claim) -> Taken | tuple[None, None]:
        """A new connection, the claim's conversation opened on it, for a claim that came
        (committed) with the final message of a connection that then had to be discarded; or
        (None, None) if none could be had: the slot stops, and the claim is handed back when
        the run settles."""
        try:
            held, slot = await self.take()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.slot_stops(exc)
            return None, None
        try:
            await send(slot.driver, slot.script.opening)
        except asyncio.CancelledError:
            await held.aclose()
            raise
        except Exception as exc:
            await _discard(held, slot.conn)
            self.slot_stops(exc)
            return None, None
        log.info("conversation %s is opened on a new connection (its claim came on one that"
                 " had to be discarded)", claim.conversation_id)
        return held, slot

    def slot_stops(self, exc: Exception) -> None:
        fault = classify(exc)
        self.worker_faults.append(fault)
        log.warning("process: a pipeline slot stops: %s: %s", fault.reason, fault.message)

    async def slot(self, index: int, ramp: StartRamp, set_up: SetUp) -> None:
        """One pipeline slot: its connection set up with the others' (SET_UP_AT_ONCE at a time),
        then, once every slot's is (or SET_UP_WAIT_S after its own), its worker. A slot that
        cannot get a connection stops (its fault recorded); the others go on."""
        taken: Taken | None = None
        try:
            async with set_up.gate:
                try:
                    taken = await self.take()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self.slot_stops(exc)
        finally:
            set_up.one_done()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(set_up.all_done.wait(), SET_UP_WAIT_S)
        except BaseException:
            if taken is not None:
                await taken[0].aclose()
            raise
        await self.worker(index, ramp, taken)

    async def worker(self, index: int, ramp: StartRamp, taken: Taken | None) -> None:
        """Claim, run, repeat, on the connection set up for the slot (a new one only after a
        conversation's connection failed), from its turn in the ramp; nothing if the slot got
        no connection. Each claim is paid for from the batch before it is sent (no two workers
        take one), and the next claim rides on the finished conversation's final message when
        the batch allows."""
        held, slot = taken if taken is not None else (None, None)
        claim: Claim | None = None
        try:
            if taken is None:
                return
            await ramp.turn(index)
            while claim is not None or self.budget > 0:
                try:
                    if claim is None:
                        self.budget -= 1  # reserved before the first await
                        if held is None or slot is None:
                            held, slot = await self.take()
                        if self.first_claim is None:
                            self.first_claim = time.monotonic()
                        claim = await claim_one(slot, self.options)
                        ramp.started(index)
                        if claim is None:
                            self.budget += 1
                            break
                        self.claimed.add(claim.conversation_id)
                    elif held is None or slot is None:
                        held, slot = await self.reopen(claim)
                        if slot is None:
                            return  # the claim is settled with the rest at the run's end
                    assert slot is not None
                    assert held is not None
                    claim_next = self.budget > 0 and self.options.max_in_flight is None
                    if claim_next:
                        self.budget -= 1
                    outcome, following = await run_conversation(
                        slot, claim, self.stages, self.timeouts, claim_next=claim_next)
                    claim = None
                    self.outcomes.append(outcome)
                    self.last_outcome = time.monotonic()
                    if isinstance(following, Claim):
                        self.claimed.add(following.conversation_id)
                    elif claim_next:
                        self.budget += 1
                    if outcome.outcome == "unresolved" or not await slot.reset():
                        await _discard(held, slot.conn)
                        held = slot = None  # a claim it carried goes on a new connection
                    if following == NOTHING_LEFT:
                        break
                    claim = following if isinstance(following, Claim) else None
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # connecting or claiming failed: this slot stops
                    self.budget += 1
                    self.slot_stops(exc)
                    return
            self.workers_finished += 1
        finally:
            ramp.started(index)
            if held is not None:
                await held.aclose()


async def _discard(held: AsyncExitStack, conn: AsyncConnection) -> None:
    """After a connection fault: have the pool drop the connection rather than reuse it."""
    try:
        if not conn.invalidated:
            await conn.invalidate()
        await held.aclose()
    except Exception as exc:  # a broken connection may fail even to close
        log.debug("closing a pipeline connection: %s", type(exc).__name__)


def phases_ms(started: float, first_claim: float | None, ramped: float | None,
              last_outcome: float | None, now: float) -> dict[str, int]:
    """Where a run's time went, in whole milliseconds (pure), the fixed costs apart from the
    work that grows with the batch: `start` (its execution row and its slots' connections,
    before the first claim), `ramp` (from the first claim until the last slot's first claim
    came back: the slots start a few at a time, `StartRamp`), `work` (to the last outcome) and
    `end` (settling claims, counting what is left). The ramp is fixed too: the slots keep the
    phases it gave them, so the last slot, started `ramp` after the first, ends about `ramp`
    after it, whatever the batch (BENCHMARKS.md measures it against the batch). It ends by the
    last outcome at the latest. A run that never claimed spent it all in `start`."""
    first = min(max(first_claim if first_claim is not None else now, started), now)
    last = min(max(last_outcome if last_outcome is not None else first, first), now)
    ramp_end = min(max(ramped if ramped is not None else first, first), last)
    return {"start": round((first - started) * 1000),
            "ramp": round((ramp_end - first) * 1000), "work": round((last - ramp_end) * 1000),
            "end": round((now - last) * 1000)}


def build_counts(claimed: int, deferred: int, outcomes: Sequence[ConversationOutcome],
                 slots_failed: int = 0) -> dict[str, int]:
    """The report's counts (pure). `eligible` is what this run could have taken: what it
    claimed plus what it left for a later run; `slots_failed`, when not 0, the pipeline slots
    that stopped because they could not connect or claim."""
    counts = {
        "eligible": claimed + deferred,
        "claimed": claimed,
        "processed": sum(o.outcome == "processed" for o in outcomes),
        "failed": sum(o.outcome == "failed" for o in outcomes),
        "deferred": deferred,
        "lost": sum(o.outcome == "lost" for o in outcomes),
        "handed_back": sum(o.outcome == "handed_back" for o in outcomes),
    }
    if slots_failed:
        counts["slots_failed"] = slots_failed
    return counts


def run_verdict(outcomes: Sequence[ConversationOutcome], worker_faults: Sequence[Fault],
                workers_finished: int, terminated: bool) -> tuple[str | None, str | None]:
    """(reason, error) of a failed run, or (None, None) for a completed one (pure).

    A run fails when it was terminated, when a fault cut conversations short, or when every
    pipeline slot stopped on a fault (none ran out of work): the work it left is not done.
    Conversations that failed in their own pipeline do not fail the run: see counts.failed.
    """
    if terminated:
        return TERMINATED, "the run was terminated (SIGTERM); its claims were settled"
    cut = [o for o in outcomes if o.fault is not None]
    if cut:
        fault = cut[0].fault
        assert fault is not None
        return fault.reason, safe_text(
            f"{len(cut)} conversation(s) cut short by {fault.reason}: {fault.message}")
    if worker_faults and workers_finished == 0:
        fault = worker_faults[-1]
        return fault.reason, safe_text(f"no pipeline slot could go on: {fault.message}")
    return None, None


async def run_process(engine: AsyncEngine, options: ProcessOptions,
                      stages: Sequence[Stage]) -> RunReport:
    started, clock = utc_now(), time.monotonic()
    timeouts = resolve_timeouts(stages, options.stage_timeouts, options.default_stage_timeout)
    async with connection(engine) as conn, conn.begin():
        execution_id = await JobExecutionRepository(conn).start(JOB_NAME)
    workers = min(options.max_concurrent_pipelines, options.batch_size)
    run = _Run(engine, options, stages, timeouts, budget=options.batch_size,
               started=clock,
               script=Script.of(execution_id, claim_statement(execution_id, options), stages,
                                timeouts))
    log.info("process: up to %d conversation(s), %d pipeline(s) at once", options.batch_size,
             workers)
    terminated = False
    ramp, set_up = StartRamp(workers), SetUp(workers)
    try:
        await asyncio.gather(*(run.slot(index, ramp, set_up) for index in range(workers)))
    except asyncio.CancelledError:
        terminated = True
        log.warning("process: terminated; settling this run's claims")
    run.ramped = ramp.done_at
    return await _finish(run, execution_id, started, terminated)


async def _finish(run: _Run, execution_id: uuid.UUID, started: str,
                  terminated: bool) -> RunReport:
    """Settle every claim this run still holds and close its execution row, in one
    transaction, retried while the server is unreachable."""
    unresolved = [o for o in run.outcomes if o.outcome == "unresolved"]
    reason, error = run_verdict(run.outcomes, run.worker_faults, run.workers_finished,
                                terminated)

    async def settle(conn: AsyncConnection) -> RunReport:
        async with conn.begin():
            # Counted before the settlement, which makes the handed-back eligible again.
            deferred = (await conn.execute(COUNT_ELIGIBLE,
                                           {"idle_after": run.options.idle_after})).scalar_one()
            settled = dict((await conn.execute(SETTLE_UNRESOLVED, {
                "ids": [o.conversation_id for o in unresolved],
                "intents": [o.intent for o in unresolved],
                "reasons": [o.failure or "" for o in unresolved],
                "owner": execution_id, "max_attempts": MAX_ATTEMPTS})).tuples().all())
            # Claims with no outcome: cut off by SIGTERM, or whose commit the run never heard of.
            leftovers = [r.id for r in (await conn.execute(SETTLE_LEFTOVERS, {
                "owner": execution_id,
                "reason": TERMINATED_REASON if terminated else LEFTOVER_REASON})).all()]
            # Claimed, and the run stopped (SIGTERM) before it heard how the conversation
            # ended: its final message may have committed all the same. The settlement above
            # waited for any transaction still holding one of them, so its state is final.
            heard = {o.conversation_id for o in run.outcomes}
            unheard = sorted(run.claimed - heard - set(leftovers))
            finals = {r.id: r for r in (await conn.execute(FINAL_STATES, {
                "ids": [o.conversation_id for o in unresolved] + unheard})).all()}
            outcomes = [_settled(o, settled, finals, execution_id) for o in run.outcomes]
            outcomes += [_unheard(cid, finals.get(cid), execution_id) for cid in unheard]
            if leftovers:
                log.warning("process: %d claim(s) handed back (%s)", len(leftovers),
                            "terminated" if terminated else "of unknown fate")
            outcomes += [ConversationOutcome(cid, "handed_back") for cid in leftovers
                         if cid not in heard]
            report = _report(run, execution_id, started, outcomes, int(deferred), reason,
                             error)
            await JobExecutionRepository(conn).finish(
                execution_id, str(report.status),
                _result(report, outcomes, phases_ms(run.started, run.first_claim, run.ramped,
                                                    run.last_outcome, time.monotonic())),
                report.error)
            return report

    settled_report = await retrying(run.engine, settle, budget_s=10 if terminated else 30)
    if isinstance(settled_report, RunReport):
        _log_summary(settled_report)
        return settled_report
    fault = settled_report
    stranded = len(run.claimed) - sum(o.outcome != "unresolved" for o in run.outcomes)
    report = _report(run, execution_id, started, run.outcomes, 0, reason or fault.reason,
                     safe_text(f"{error or fault.message}; the run could not settle its claims"
                               f" ({fault.reason}): recover fails what it left processing"
                               " after its --stale-after and closes the run as abandoned"),
                     stranded=stranded)
    _log_summary(report)
    return report


def _settled(o: ConversationOutcome, settled: Mapping[uuid.UUID, str],
             finals: Mapping[uuid.UUID, Any], owner: uuid.UUID) -> ConversationOutcome:
    if o.outcome != "unresolved":
        return o
    status = settled.get(o.conversation_id)
    if status is None:  # not ours any more, or its commit had gone through after all
        final = finals.get(o.conversation_id)
        committed = (final is not None and final.claimed_by == owner
                     and final.status == "processed")
        return ConversationOutcome(o.conversation_id, "processed" if committed else "lost",
                                   o.results, o.failure, o.fault)
    return ConversationOutcome(o.conversation_id,
                               "failed" if status == "failed" else "handed_back",
                               o.results, o.failure, o.fault)


def _unheard(conversation_id: uuid.UUID, final: Any, owner: uuid.UUID) -> ConversationOutcome:
    """A claim whose outcome the run never heard (stopped mid-message): what the database says
    became of it. Processed or failed under this run's claim is what it ended as; anything
    else is a newer owner's."""
    if final is not None and final.claimed_by == owner and final.status in ("processed",
                                                                            "failed"):
        return ConversationOutcome(conversation_id, final.status)
    return ConversationOutcome(conversation_id, "lost")


def _report(run: _Run, execution_id: uuid.UUID, started: str,
            outcomes: Sequence[ConversationOutcome], deferred: int, reason: str | None,
            error: str | None, *, stranded: int = 0) -> RunReport:
    claimed = len(run.claimed | {o.conversation_id for o in outcomes})
    counts = build_counts(claimed, deferred, outcomes, len(run.worker_faults))
    if stranded:
        counts["stranded"] = stranded
    results = [r for o in outcomes for r in o.results]
    return RunReport(
        task=JOB_NAME, status=RunStatus.FAILED if reason else RunStatus.COMPLETED,
        reason=reason, error=error, execution_id=str(execution_id), started_at=started,
        finished_at=utc_now(), counts=counts, stage_errors=fold_errors(results),
        stage_timings=fold_timings(results))


def _result(report: RunReport, outcomes: Sequence[ConversationOutcome],
            phases: Mapping[str, int]) -> dict[str, Any]:
    """job_executions.result: the report itself, plus per-conversation detail and where the
    run's time went."""
    errors = [{"conversation_id": str(o.conversation_id), "stage": r.stage, "message": r.error}
              for o in outcomes for r in o.results if r.error is not None]
    failures = [{"conversation_id": str(o.conversation_id), "outcome": o.outcome,
                 "reason": o.failure}
                for o in outcomes if o.outcome in ("failed", "handed_back")]
    return execution_result(report, errors=errors[:MAX_RESULT_ERRORS],
                            failures=failures[:MAX_RESULT_ERRORS], phases_ms=dict(phases))


def _log_summary(report: RunReport) -> None:
    c = report.counts
    log.info("process: %d processed, %d failed, %d deferred, %d lost to a newer owner, "
             "%d handed back", c.get("processed", 0), c.get("failed", 0),
             c.get("deferred", 0), c.get("lost", 0), c.get("handed_back", 0))
