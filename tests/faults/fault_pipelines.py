"""Pipelines the fault tests plug in with `--pipeline fault_pipelines:NAME`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from crontask_jobs.pipeline import Stage, StageContext
from crontask_jobs.pipeline.default import default_stages

LOG_TABLE = "CREATE TABLE processed_log (conversation_id uuid, execution_id uuid, stage text)"


async def log_stage(ctx: StageContext, stage: str) -> None:
    await ctx.conn.execute(sa.text("INSERT INTO processed_log VALUES (:c, :e, :s)"),
                           {"c": ctx.conversation_id, "e": ctx.execution_id, "s": stage})


async def before(ctx: StageContext) -> None:
    await log_stage(ctx, "before")


async def after(ctx: StageContext) -> None:
    await log_stage(ctx, "after")


async def lock_and_wait(ctx: StageContext) -> None:
    """Takes the conversation's row lock, then works outside the database for a long time."""
    await ctx.conn.execute(sa.text("UPDATE conversations SET summary = 'working' WHERE id = :id"),
                           {"id": ctx.conversation_id})
    await asyncio.sleep(30)


async def sleep_in_sql(ctx: StageContext) -> None:
    await ctx.conn.execute(sa.text("SELECT pg_sleep(30)"))


async def sleep_in_sql_for_the_marked(ctx: StageContext) -> None:
    """Only the conversation whose summary is 'marked' sleeps (in SQL, terminable)."""
    await ctx.conn.execute(sa.text(
        "SELECT pg_sleep(CASE WHEN summary = 'marked' THEN 30 ELSE 0 END)"
        " FROM conversations WHERE id = :id"), {"id": ctx.conversation_id})


async def stubborn(ctx: StageContext) -> None:
    """Swallows the server's cancel (in a savepoint of its own) and starts another long
    statement: the worst a stage can do."""
    try:
        async with ctx.conn.begin_nested():
            await ctx.conn.execute(sa.text("SELECT pg_sleep(30)"))
    except Exception:
        pass
    await ctx.conn.execute(sa.text("SELECT pg_sleep(30)"))


async def short_sql_sleep(ctx: StageContext) -> None:
    await ctx.conn.execute(sa.text("SELECT pg_sleep(0.3)"))


def frozen_holder() -> list[Stage]:
    return [Stage("lock_and_wait", lock_and_wait, critical=False,
                  timeout=timedelta(seconds=1))]


def sql_timeout_noncritical() -> list[Stage]:
    return [Stage("before", before), Stage("sleep", sleep_in_sql, critical=False,
                                           timeout=timedelta(milliseconds=500)),
            Stage("after", after)]


def sql_timeout_critical() -> list[Stage]:
    return [Stage("before", before), Stage("sleep", sleep_in_sql, critical=True,
                                           timeout=timedelta(milliseconds=500)),
            Stage("after", after)]


def stubborn_stage() -> list[Stage]:
    return [Stage("before", before), Stage("stubborn", stubborn, critical=False,
                                           timeout=timedelta(milliseconds=300)),
            Stage("after", after)]


def terminable() -> list[Stage]:
    return [Stage("before", before), Stage("sleep", sleep_in_sql_for_the_marked,
                                           critical=False, timeout=timedelta(seconds=60)),
            Stage("after", after)]


def slow_sql() -> list[Stage]:
    return [Stage("before", before), Stage("sleep", short_sql_sleep),
            Stage("after", after)]


def default_with_log() -> list[Stage]:
    return [*default_stages(), Stage("after", after)]


async def long_outside(ctx: StageContext) -> None:
    await log_stage(ctx, "long")
    await asyncio.sleep(30)


def long_work() -> list[Stage]:
    return [Stage("long", long_outside, timeout=timedelta(seconds=60))]
