"""Pipelines the database tests plug in with `--pipeline pipelines_for_tests:NAME`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from crontask_jobs.pipeline import Stage, StageContext, StageError


async def record(ctx: StageContext) -> None:
    """A trace per (conversation, run): how often each was processed (see support.LOG_TABLE)."""
    await ctx.conn.execute(
        sa.text("INSERT INTO processed_log VALUES (:c, :e)"),
        {"c": ctx.conversation_id, "e": ctx.execution_id})


async def slow(ctx: StageContext) -> None:
    await asyncio.sleep(0.05)


async def boom(ctx: StageContext) -> None:
    await asyncio.sleep(0.01)
    raise StageError("boom: the enrichment service said no")


async def hang(ctx: StageContext) -> None:
    await asyncio.sleep(3600)


async def block(ctx: StageContext) -> None:
    """Blocks until the process is killed: the 'killed mid-way' test."""
    await asyncio.sleep(3600)


def recording() -> list[Stage]:
    return [Stage("record", record), Stage("slow", slow, critical=False)]


def with_failing_stage() -> list[Stage]:
    return [Stage("record", record), Stage("enrich", boom, critical=False),
            Stage("slow", slow, critical=False)]


def with_hanging_stage() -> list[Stage]:
    return [Stage("record", record), Stage("hang", hang, critical=False,
                                           timeout=timedelta(milliseconds=300))]


def with_critical_failure() -> list[Stage]:
    return [Stage("record", record), Stage("enrich", boom, critical=True),
            Stage("slow", slow, critical=False)]


def blocking() -> list[Stage]:
    return [Stage("block", block)]
