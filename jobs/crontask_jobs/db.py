"""Engines for one run, and the one place connections are opened.

The engine is built from a parsed `DatabaseTarget`: the driver gets libpq keywords (never a URL
string it could echo), SQLAlchemy's own URL holds nothing, statement parameters are hidden from
exception messages, and every new session sets the run's `SessionLimits` before it is used.
`connection()` is how the tasks connect: a failure to connect (refused, unresolvable, bad
credentials, too many clients, server starting or stopping) surfaces as `ConnectFailed`, so the
run can tell "the server would not let us in" (exit 3) from a failure after it did (exit 1).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from crontask_jobs.dburl import DatabaseTarget
from crontask_jobs.session import SessionLimits, client_keywords

DRIVER_URL = "postgresql+psycopg://"
POOL_TIMEOUT_SECONDS = 30


class ConnectFailed(Exception):
    """Opening a connection failed; `__cause__` is the driver's error."""


def _apply_limits(limits: SessionLimits) -> Any:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        version = int(dbapi_connection.driver_connection.info.server_version)
        settings = limits.settings(version)
        calls = ", ".join("set_config(%s, %s, false)" for _ in settings)
        values = [v for item in settings.items() for v in item]
        # In autocommit: a session setting made in a transaction rolled back later would be
        # undone, and a pod frozen between a BEGIN and this statement would sit idle in a
        # transaction before its idle limit is set.
        dbapi_connection.autocommit = True
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SELECT {calls}", values)  # the f-string joins placeholders only
        finally:
            cursor.close()
            dbapi_connection.autocommit = False

    return on_connect


def make_engine(target: DatabaseTarget, *, task: str, pool_size: int,
                limits: SessionLimits | None = None) -> AsyncEngine:
    """An engine of exactly `pool_size` connections (no overflow), each with the limits set."""
    engine = create_async_engine(
        DRIVER_URL,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_SECONDS,
        pool_pre_ping=True,
        hide_parameters=True,
        # A pipeline slot's driver is in autocommit and runs the engine's own explicit
        # transactions (pipeline/engine.py): SQLAlchemy's rollback of its view of a
        # transaction there must never reach the driver, where the next conversation's
        # transaction may already be open. Elsewhere nothing is in autocommit.
        skip_autocommit_rollback=True,
        connect_args=client_keywords(task, target.keywords()),
    )
    # First, before even the dialect's own first-connect queries: no statement of a session
    # runs without its limits.
    event.listen(engine.sync_engine, "connect", _apply_limits(limits or SessionLimits()),
                 insert=True)
    return engine


@asynccontextmanager
async def open_engine(target: DatabaseTarget, *, task: str, pool_size: int = 2,
                      limits: SessionLimits | None = None) -> AsyncIterator[AsyncEngine]:
    """An engine for one run, its connections closed however the run ends."""
    engine = make_engine(target, task=task, pool_size=pool_size, limits=limits)
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def connection(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection from the pool; failing to get one raises ConnectFailed."""
    conn = engine.connect()
    try:
        await conn.start()
    except (DBAPIError, PoolTimeout, OSError) as exc:
        raise ConnectFailed("could not connect to the database") from exc
    try:
        yield conn
    finally:
        await conn.close()


def make_sync_engine(target: DatabaseTarget) -> sa.Engine:
    """For migrations: one connection at a time, the client keywords, no session limits (DDL
    on a large table may legitimately run long)."""
    return sa.create_engine(
        DRIVER_URL, poolclass=sa.pool.NullPool, hide_parameters=True,
        connect_args=client_keywords("migrate", target.keywords()),
    )
