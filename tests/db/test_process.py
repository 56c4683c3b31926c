"""process (FR-003/FR-004, seed T3.3, T4.2): bounded claims, deferral, stage errors and timings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
import sqlalchemy as sa
from pipelines_for_tests import (
    recording,
    with_critical_failure,
    with_failing_stage,
    with_hanging_stage,
)
from sqlalchemy.engine import URL
from support import (
    LOG_TABLE,
    add_conversations,
    execute,
    rows,
    run_async,
    run_simultaneously,
    scalar,
)

from crontask_contract.report import RunReport
from crontask_jobs.pipeline import Stage, StageContext, StageError
from crontask_jobs.pipeline.default import NO_MESSAGES, default_stages
from crontask_jobs.tasks.process import ProcessOptions, run_process

pytestmark = pytest.mark.db


def process(url: URL, stages: Sequence[Stage], **kw: object) -> RunReport:
    options = ProcessOptions(**kw)  # type: ignore[arg-type]
    return run_async(url, lambda e: run_process(e, options, stages))


def statuses(sql: sa.Engine) -> dict[str, int]:
    return dict(rows(sql, "SELECT status, count(*) FROM conversations GROUP BY status"))


def result(sql: sa.Engine, execution_id: str | None) -> dict[str, object]:
    value = scalar(sql, "SELECT result FROM job_executions WHERE id = :id", {"id": execution_id})
    assert isinstance(value, dict)
    return value


@pytest.fixture
def log_table(sql: sa.Engine) -> None:
    execute(sql, LOG_TABLE)


@pytest.mark.usefixtures("log_table")
def test_25_eligible_with_limit_10(db_url: URL, sql: sa.Engine,
                                   caplog: pytest.LogCaptureFixture) -> None:
    add_conversations(sql, 25, idle_minutes=20)
    with caplog.at_level(logging.INFO, logger="crontask_jobs"):
        report = process(db_url, recording())
    assert report.counts == {"eligible": 25, "claimed": 10, "processed": 10, "failed": 0,
                             "deferred": 15, "lost": 0, "handed_back": 0}
    assert statuses(sql) == {"processed": 10, "active": 15}
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'active'"
                       " AND claimed_by IS NULL AND attempts = 0") == 15
    assert any("15 deferred" in r.getMessage() for r in caplog.records)
    doc = result(sql, report.execution_id)
    assert doc["counts"] == report.counts
    phases = doc["phases_ms"]  # the run's fixed start, ramp and end, apart from its work
    assert isinstance(phases, dict) and set(phases) == {"start", "ramp", "work", "end"}
    assert all(isinstance(v, int) and v >= 0 for v in phases.values())


@pytest.mark.usefixtures("log_table")
def test_all_processed_when_under_the_limit(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 5, idle_minutes=20)
    add_conversations(sql, 3, idle_minutes=5)  # not idle long enough
    report = process(db_url, recording())
    assert (report.counts["processed"], report.counts["deferred"]) == (5, 0)
    assert statuses(sql) == {"processed": 5, "active": 3}


@pytest.mark.usefixtures("log_table")
def test_semaphore_bounds_concurrency(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 12, idle_minutes=20, messages=0)
    running = 0
    peak = 0

    async def measure(ctx: StageContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    report = process(db_url, [Stage("measure", measure)], batch_size=12,
                     max_concurrent_pipelines=3)
    assert report.counts["processed"] == 12
    assert peak == 3


@pytest.mark.usefixtures("log_table")
def test_no_claim_waits_for_a_free_pipeline(db_url: URL, sql: sa.Engine) -> None:
    """A conversation is claimed when a pipeline is free to run it, so at no moment is one
    `processing` without a pipeline working on it (recover could fail it otherwise)."""
    add_conversations(sql, 12, idle_minutes=20, messages=0)
    seen: list[int] = []

    async def observe(ctx: StageContext) -> None:
        seen.append(await asyncio.to_thread(
            scalar, sql, "SELECT count(*) FROM conversations WHERE status = 'processing'"))
        await asyncio.sleep(0.05)

    report = process(db_url, [Stage("observe", observe)], batch_size=12,
                     max_concurrent_pipelines=3)
    assert report.counts["processed"] == 12
    assert len(seen) == 12
    assert max(seen) <= 3


@pytest.mark.usefixtures("log_table")
def test_failing_stage_is_recorded_with_its_timing(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 4, idle_minutes=20)
    report = process(db_url, with_failing_stage())
    assert report.counts["processed"] == 4  # non-critical: the rest went on
    assert report.stage_errors["enrich"].count == 4
    assert "enrichment service said no" in report.stage_errors["enrich"].last_message
    assert report.stage_timings["enrich"].count == 4
    assert report.stage_timings["enrich"].max_ms >= 10
    assert report.stage_timings["slow"].count == 4
    doc = result(sql, report.execution_id)
    errors = doc["stage_errors"]
    timings = doc["stage_timings"]
    assert isinstance(errors, dict)
    assert isinstance(timings, dict)
    # One shape: the result describes stage errors and timings with the report's own keys.
    assert errors == {"enrich": {"count": 4, "last": report.stage_errors["enrich"].last_message}}
    assert set(timings) == {"record", "enrich", "slow"}
    assert set(timings["enrich"]) == {"n", "total_ms", "max_ms"}
    assert timings["enrich"]["n"] == 4
    assert timings["enrich"]["total_ms"] >= 40
    assert scalar(sql, "SELECT count(*) FROM processed_log") == 4


@pytest.mark.usefixtures("log_table")
def test_critical_failure_fails_the_conversation_and_rolls_back(db_url: URL,
                                                                sql: sa.Engine) -> None:
    add_conversations(sql, 3, idle_minutes=20)
    report = process(db_url, with_critical_failure())
    assert (report.counts["processed"], report.counts["failed"]) == (0, 3)
    assert statuses(sql) == {"failed": 3}
    assert scalar(sql, "SELECT count(*) FROM processed_log") == 0  # earlier stage rolled back
    assert "slow" not in report.stage_timings  # stages after a critical failure do not run
    reason = scalar(sql, "SELECT min(failure_reason) FROM conversations")
    assert reason.startswith("stage enrich: boom")


@pytest.mark.usefixtures("log_table")
def test_hanging_stage_is_timed_out(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 2, idle_minutes=20)
    report = process(db_url, with_hanging_stage())
    assert report.counts["processed"] == 2
    assert report.stage_errors["hang"].count == 2
    assert report.stage_errors["hang"].last_message == "timed out after 0.3s"
    assert report.stage_timings["hang"].max_ms >= 300


@pytest.mark.usefixtures("log_table")
def test_stage_timeout_flag_overrides_the_stage(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 1, idle_minutes=20)
    report = process(db_url, with_hanging_stage(),
                     stage_timeouts={"hang": timedelta(milliseconds=100)})
    assert report.stage_errors["hang"].last_message == "timed out after 0.1s"


def test_default_pipeline(db_url: URL, sql: sa.Engine) -> None:
    with_messages = add_conversations(sql, 2, idle_minutes=20, messages=3)
    [empty] = add_conversations(sql, 1, idle_minutes=20, messages=0)
    execute(sql, "UPDATE users SET last_interaction_at = now() - interval '3 days'")
    report = process(db_url, default_stages())
    assert report.counts["processed"] == 3
    assert report.stage_errors["summarise"].count == 1
    assert report.stage_errors["summarise"].last_message == NO_MESSAGES
    got = {r.id: r for r in rows(sql, "SELECT id, status, summary, message_count"
                                      " FROM conversations")}
    assert got[empty].status == "processed"
    assert got[empty].summary is None
    for cid in with_messages:
        assert got[cid].status == "processed"
        assert got[cid].message_count == 3
        assert got[cid].summary.startswith("3 messages (1 assistant, 2 user)")
        assert "tomatoes" in got[cid].summary
    stale = scalar(sql, "SELECT count(*) FROM users WHERE last_interaction_at"
                        " < now() - interval '2 days'")
    assert stale == 0  # touch_user moved every user's clock to their conversation's


def test_max_in_flight_bounds_claims_across_runs(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 3, status="processing", idle_minutes=20)  # another run's work
    add_conversations(sql, 10, idle_minutes=20)
    seen: list[int] = []

    async def count_in_flight(ctx: StageContext) -> None:
        seen.append(await asyncio.to_thread(
            scalar, sql, "SELECT count(*) FROM conversations WHERE status = 'processing'"))
        await asyncio.sleep(0.02)

    report = process(db_url, [Stage("count", count_in_flight)], max_in_flight=5,
                     max_concurrent_pipelines=4)
    # Slots free up as pipelines finish, so the run goes on claiming, never above the cap.
    assert report.counts["claimed"] == report.counts["processed"] == 10
    assert seen and max(seen) == 5
    report = process(db_url, [Stage("count", count_in_flight)], max_in_flight=3)
    assert report.counts["claimed"] == 0


@pytest.mark.usefixtures("log_table")
def test_recovered_meanwhile_is_not_overwritten(db_url: URL, sql: sa.Engine) -> None:
    [cid] = add_conversations(sql, 1, idle_minutes=20)

    async def recovered_behind_our_back(ctx: StageContext) -> None:
        # Another session (recover) fails the conversation while the pipeline runs.
        await asyncio.to_thread(execute, sql, "UPDATE conversations SET status = 'failed',"
                                " failure_reason = 'recovered' WHERE id = :id", {"id": cid})

    async def write_summary(ctx: StageContext) -> None:
        await ctx.conn.execute(sa.text("UPDATE conversations SET summary = 'late'"
                                       " WHERE id = :id"), {"id": ctx.conversation_id})

    report = process(db_url, [Stage("interfere", recovered_behind_our_back),
                              Stage("persist", write_summary)])
    assert report.counts["lost"] == 1
    assert report.counts["processed"] == 0
    [row] = rows(sql, "SELECT status, failure_reason, summary FROM conversations")
    assert (row.status, row.failure_reason, row.summary) == ("failed", "recovered", None)


@pytest.mark.usefixtures("log_table")
def test_two_concurrent_runs_process_each_conversation_once(db_url: URL,
                                                            sql: sa.Engine) -> None:
    add_conversations(sql, 100, idle_minutes=20, messages=0)
    reports = run_simultaneously(
        db_url, 2, lambda engine: run_process(engine, ProcessOptions(batch_size=60), recording()),
        pool_size=12)
    # SKIP LOCKED lets the two claims interleave: any split is right if none exceeds the batch
    # size and together they take every conversation once.
    claimed = [r.counts["claimed"] for r in reports]
    assert max(claimed) <= 60
    assert sum(claimed) == 100
    assert sum(r.counts["processed"] for r in reports) == 100
    assert scalar(sql, "SELECT count(*) FROM processed_log") == 100
    assert scalar(sql, "SELECT count(DISTINCT conversation_id) FROM processed_log") == 100
    assert scalar(sql, "SELECT count(DISTINCT execution_id) FROM processed_log") == 2
    assert statuses(sql) == {"processed": 100}
    assert scalar(sql, "SELECT max(attempts) FROM conversations") == 1


def test_the_claim_is_committed_before_the_pipeline_runs(db_url: URL, sql: sa.Engine) -> None:
    """The claim travels in one round trip with the conversation's BEGIN: it must still be
    committed on its own, so recover and other runs see it claimed while the stages run."""
    add_conversations(sql, 3, idle_minutes=20, messages=0)
    seen: list[tuple[str, str, int]] = []

    async def look_from_another_session(ctx: StageContext) -> None:
        row = await asyncio.to_thread(
            lambda: rows(sql, "SELECT status, claimed_by::text AS owner, attempts"
                              " FROM conversations WHERE id = :id",
                         {"id": ctx.conversation_id})[0])
        seen.append((row.status, row.owner, row.attempts))

    report = process(db_url, [Stage("look", look_from_another_session)], batch_size=3,
                     max_concurrent_pipelines=2)
    assert report.counts["processed"] == 3
    assert seen == [("processing", report.execution_id, 1)] * 3


@pytest.mark.parametrize("max_in_flight", [None, 10])
def test_a_stage_that_ends_the_transaction_fails_its_conversation(
        db_url: URL, sql: sa.Engine, max_in_flight: int | None) -> None:
    """The pipeline owns the conversation's transaction: a stage that commits it (or rolls it
    back) fails its conversation, and what follows never runs outside a transaction."""
    add_conversations(sql, 4, idle_minutes=20, messages=0)

    async def commit_early(ctx: StageContext) -> None:
        await ctx.conn.execute(sa.text("UPDATE conversations SET summary = 'early'"
                                       " WHERE id = :id"), {"id": ctx.conversation_id})
        await ctx.conn.commit()

    async def write_late(ctx: StageContext) -> None:
        await ctx.conn.execute(sa.text("UPDATE conversations SET summary = 'late'"
                                       " WHERE id = :id"), {"id": ctx.conversation_id})

    report = process(db_url, [Stage("early", commit_early), Stage("late", write_late)],
                     batch_size=4, max_concurrent_pipelines=2, max_in_flight=max_in_flight)
    assert (report.counts["processed"], report.counts["failed"]) == (0, 4)
    assert report.stage_errors["early"].count == 4
    assert "ended the conversation's transaction" in (report.stage_errors["early"].last_message)
    got = rows(sql, "SELECT status, summary, failure_reason FROM conversations")
    assert {(r.status, r.summary) for r in got} == {("failed", "early")}
    assert all("stage early" in r.failure_reason for r in got)
    # The same slots go on to run well-behaved pipelines afterwards.
    add_conversations(sql, 4, idle_minutes=20, messages=0)
    report = process(db_url, [Stage("late", write_late)], batch_size=4,
                     max_concurrent_pipelines=2, max_in_flight=max_in_flight)
    assert report.counts["processed"] == 4


def test_pipeline_connections_go_back_to_the_pool_as_they_came(db_url: URL,
                                                               sql: sa.Engine) -> None:
    """Slots drive their transactions in autocommit; the run's own bookkeeping, on the same
    pool afterwards, relies on implicit transactions (one atomic settlement)."""
    from crontask_jobs.pipeline.engine import driver_of

    add_conversations(sql, 6, idle_minutes=20, messages=0)

    async def run_then_check(
            engine: sa.ext.asyncio.AsyncEngine) -> list[tuple[bool, int, bool]]:
        conns = [await engine.connect() for _ in range(4)]  # every pooled connection
        before = {(await driver_of(c)).prepare_threshold for c in conns}
        for c in conns:
            await c.close()
        report = await run_process(engine, ProcessOptions(batch_size=6,
                                                          max_concurrent_pipelines=3),
                                   recording_free())
        assert report.counts["processed"] == 6
        conns = [await engine.connect() for _ in range(4)]
        try:
            return [((await driver_of(c)).autocommit, (await c.execute(sa.text(
                "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'crontask%'"
            ))).scalar_one(), {(await driver_of(c)).prepare_threshold} == before)
                for c in conns]
        finally:
            for c in conns:
                await c.close()

    # Implicit transactions back, the run's prepared statements deallocated, and the driver's
    # automatic preparing as it was.
    assert run_async(db_url, run_then_check, pool_size=4) == [(False, 0, True)] * 4


def recording_free() -> list[Stage]:
    async def noop(ctx: StageContext) -> None:
        await asyncio.sleep(0)

    return [Stage("noop", noop)]


def test_each_conversation_starts_with_sqlalchemy_outside_a_transaction(
        db_url: URL, sql: sa.Engine) -> None:
    """The engine runs the transactions on the driver; SQLAlchemy's own view (begun by a
    stage's statement) is cleared after each conversation, so a slot's next conversation sees
    its connection as a fresh checkout would (a stage may use `begin_nested`, `in_transaction`
    ... as documented by SQLAlchemy)."""
    add_conversations(sql, 4, idle_minutes=20, messages=0)
    seen: list[bool] = []

    async def look_then_write(ctx: StageContext) -> None:
        seen.append(ctx.conn.in_transaction())
        async with ctx.conn.begin_nested():
            await ctx.conn.execute(sa.text("UPDATE conversations SET summary = 'seen'"
                                           " WHERE id = :id"), {"id": ctx.conversation_id})

    report = process(db_url, [Stage("look", look_then_write)], batch_size=4,
                     max_concurrent_pipelines=1)
    assert report.counts["processed"] == 4
    assert seen == [False] * 4
    assert statuses(sql) == {"processed": 4}
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE summary = 'seen'") == 4


def test_a_slot_takes_each_next_conversation_with_the_final_message(
        db_url: URL, sql: sa.Engine) -> None:
    """One slot, one connection: after the first, each conversation is claimed in the message
    that committed the one before (the claim after the COMMIT, in a transaction of its own),
    so its stages run in a transaction of their own that the next claim does not share. A
    stage that fails rolls back only its own conversation's writes."""
    ids = add_conversations(sql, 6, idle_minutes=20, messages=0)
    order: list[object] = []

    async def write_then_maybe_fail(ctx: StageContext) -> None:
        order.append(ctx.conversation_id)
        await ctx.conn.execute(sa.text("UPDATE conversations SET summary = 'written'"
                                       " WHERE id = :id"), {"id": ctx.conversation_id})
        if len(order) % 2 == 0:
            raise StageError("every second one fails")

    report = process(db_url, [Stage("write", write_then_maybe_fail)], batch_size=6,
                     max_concurrent_pipelines=1)
    assert (report.counts["processed"], report.counts["failed"]) == (3, 3)
    assert sorted(map(str, order)) == sorted(map(str, ids))
    got = {r.id: r for r in rows(sql, "SELECT id, status, summary FROM conversations")}
    for n, cid in enumerate(order, start=1):
        expected = ("failed", None) if n % 2 == 0 else ("processed", "written")
        assert (got[cid].status, got[cid].summary) == expected
    # Each claim committed before its own conversation ran: a fresh claim, one attempt each.
    assert scalar(sql, "SELECT max(attempts) FROM conversations") == 1


def test_a_claim_carried_on_a_connection_that_is_then_discarded_runs_on_a_new_one(
        db_url: URL, sql: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next claim came, committed, with a final message; then the connection could not be
    trusted (`reset` said so) and was discarded. The claimed conversation is opened on a new
    connection and processed, not left `processing` until the run hands it back."""
    from crontask_jobs.pipeline.engine import SlotConnection

    ids = add_conversations(sql, 4, idle_minutes=20, messages=0)
    real_reset = SlotConnection.reset
    resets: list[bool] = []

    async def untrusted_once(self: SlotConnection) -> bool:
        trusted = await real_reset(self) and bool(resets)
        resets.append(trusted)
        return trusted

    monkeypatch.setattr(SlotConnection, "reset", untrusted_once)
    seen: list[object] = []

    async def note(ctx: StageContext) -> None:
        seen.append(ctx.conversation_id)
        await ctx.conn.execute(sa.text("UPDATE conversations SET summary = 'written'"
                                       " WHERE id = :id"), {"id": ctx.conversation_id})

    report = process(db_url, [Stage("note", note)], batch_size=4, max_concurrent_pipelines=1)
    assert resets[0] is False  # the first connection was discarded, a claim riding on it
    assert report.counts["processed"] == 4 and report.counts["handed_back"] == 0, report.counts
    assert report.status == "completed"
    assert sorted(map(str, seen)) == sorted(map(str, ids))  # each once
    assert statuses(sql) == {"processed": 4}
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE summary = 'written'") == 4
    assert scalar(sql, "SELECT max(attempts) FROM conversations") == 1


def test_a_next_claim_that_fails_after_the_commit_leaves_the_conversation_processed(
        db_url: URL, sql: sa.Engine) -> None:
    """The next claim travels after the finished conversation's COMMIT, in the same message.
    When the claim fails there (here a stage removed the run's prepared claim from its
    session), the error comes after the conversation committed: it is reported `processed`,
    as the database says, not failed or lost. The slot then cannot claim, and stops."""
    add_conversations(sql, 3, idle_minutes=20, messages=0)

    async def drop_the_claim(ctx: StageContext) -> None:
        await ctx.conn.execute(sa.text(f"DEALLOCATE crontask_claim_{ctx.execution_id.hex}"))

    report = process(db_url, [Stage("drop", drop_the_claim)], batch_size=3,
                     max_concurrent_pipelines=1)
    assert (report.counts["processed"], report.counts["failed"], report.counts["lost"]) == (
        1, 0, 0)
    assert statuses(sql) == {"processed": 1, "active": 2}
    assert report.status == "failed"  # its only slot could not go on
    assert "does not exist" in (report.error or "")
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'active'"
                       " AND claimed_by IS NULL") == 2  # nothing claimed and left behind


@dataclass
class SetUps:
    """What a run's slot set-ups did, watched through `SlotConnection.take`."""

    at_once: int = 0
    peak: int = 0
    done: int = 0
    seen_by_stages: list[int] = field(default_factory=list)

    def stage(self) -> Stage:
        """A stage that notes how many set-ups had ended when it ran."""
        async def look(ctx: StageContext) -> None:
            self.seen_by_stages.append(self.done)

        return Stage("look", look)


def watch_set_ups(monkeypatch: pytest.MonkeyPatch, delay_s: Callable[[int], float]) -> SetUps:
    """Every slot set-up (the n-th from 0) first waits delay_s(n), then sets up for real."""
    from crontask_jobs.pipeline import engine

    seen = SetUps()
    take = engine.SlotConnection.take.__func__  # type: ignore[attr-defined]

    async def watched(cls: type, conn: object, script: object) -> object:
        order = seen.done + seen.at_once
        seen.at_once += 1
        seen.peak = max(seen.peak, seen.at_once)
        try:
            await asyncio.sleep(delay_s(order))
            return await take(cls, conn, script)
        finally:
            seen.at_once -= 1
            seen.done += 1

    monkeypatch.setattr(engine.SlotConnection, "take", classmethod(watched))
    return seen


def test_a_run_sets_up_its_slots_a_few_at_a_time_before_the_first_claim(
        db_url: URL, sql: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every slot's connection is taken and prepared before any conversation is claimed (the
    run's fixed start, kept apart from its work), and no more than SET_UP_AT_ONCE at once."""
    from crontask_jobs.tasks.process import SET_UP_AT_ONCE

    add_conversations(sql, 12, idle_minutes=20, messages=0)
    # Each set-up long enough for every slot to try at once.
    seen = watch_set_ups(monkeypatch, lambda n: 0.02)
    report = process(db_url, [seen.stage()], batch_size=12, max_concurrent_pipelines=12)
    assert report.counts["processed"] == 12
    assert SET_UP_AT_ONCE < 12
    assert seen.peak == SET_UP_AT_ONCE
    assert seen.seen_by_stages == [12] * 12


def test_a_slot_slow_to_connect_does_not_hold_the_others_back(
        db_url: URL, sql: sa.Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slots wait for each other's connections before claiming, but not for long: one whose
    set-up takes a second (a slow connect) leaves the others to start without it."""
    add_conversations(sql, 6, idle_minutes=20, messages=0)
    seen = watch_set_ups(monkeypatch, lambda n: 1.0 if n == 0 else 0.0)
    report = process(db_url, [seen.stage()], batch_size=6, max_concurrent_pipelines=3)
    assert report.counts["processed"] == 6
    assert report.status == "completed"
    assert seen.seen_by_stages[0] == 2  # the first conversation ran while one slot connected


def test_a_schema_without_the_finish_function_claims_nothing(db_url: URL,
                                                             sql: sa.Engine) -> None:
    """A jobs image newer than its database's schema (migration 0004 not applied): the run
    fails at once with the reason, before any conversation is claimed or marked."""
    from crontask_jobs.pipeline.engine import driver_of

    add_conversations(sql, 3, idle_minutes=20, messages=0)
    execute(sql, "DROP FUNCTION crontask_finish_processed(uuid, uuid)")

    async def run_then_look(engine: sa.ext.asyncio.AsyncEngine) -> tuple[RunReport, list[bool]]:
        report = await run_process(engine, ProcessOptions(batch_size=3,
                                                          max_concurrent_pipelines=2),
                                   recording_free())
        conns = [await engine.connect() for _ in range(3)]  # every pooled connection
        try:
            return report, [(await driver_of(c)).autocommit for c in conns]
        finally:
            for c in conns:
                await c.close()

    report, autocommit = run_async(db_url, run_then_look, pool_size=3)
    # The slots' half-set-up connections were not lent to the run's bookkeeping.
    assert autocommit == [False] * 3
    assert report.status == "failed"
    assert "crontask_finish_processed" in (report.error or "")
    assert (report.counts["claimed"], report.counts["processed"], report.counts["failed"]) == (
        0, 0, 0)
    assert statuses(sql) == {"active": 3}
    assert scalar(sql, "SELECT max(attempts) FROM conversations") == 0


@pytest.mark.parametrize("fails", ["noncritical", "critical"])
def test_a_slot_goes_on_after_many_rollbacks(db_url: URL, sql: sa.Engine, fails: str) -> None:
    """One slot, many conversations, each with a statement the driver would prepare after a
    few runs and a stage that fails (rolled back to its savepoint, or the whole conversation
    rolled back). A rollback must not cost the slot the statements it prepared for the run
    (psycopg deallocates every prepared statement on a rollback when it has prepared some
    itself): every conversation is taken, none is left."""
    add_conversations(sql, 12, idle_minutes=20, messages=0)

    async def read(ctx: StageContext) -> None:
        await ctx.conn.execute(sa.text("SELECT count(*) FROM messages"
                                       " WHERE conversation_id = :id"),
                               {"id": ctx.conversation_id})

    async def fail(ctx: StageContext) -> None:
        raise StageError("no")

    report = process(db_url, [Stage("read", read), Stage("fail", fail,
                                                         critical=fails == "critical")],
                     batch_size=12, max_concurrent_pipelines=1)
    assert report.status == "completed", report.error
    assert "slots_failed" not in report.counts
    expected = {"critical": (0, 12), "noncritical": (12, 0)}[fails]
    assert (report.counts["processed"], report.counts["failed"]) == expected
    assert statuses(sql) == {"processed" if fails == "noncritical" else "failed": 12}
