"""Real server errors, raised through the jobs' own engine, classified as the reports say.

Each error is produced for real (a lock held by another session, a timeout, a deadlock, a
terminated backend, a refused connection), not built by hand, so a driver upgrade that changes
how errors surface fails here first.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection
from support import execute, run_async, target_of

from crontask_jobs.db import connection, open_engine
from crontask_jobs.dburl import parse_database_url
from crontask_jobs.faults import Fault, classify

pytestmark = pytest.mark.db


def fault_of(url: URL, work: Callable[[AsyncConnection], Awaitable[Any]]) -> Fault:
    async def main(engine: Any) -> Fault:
        try:
            async with connection(engine) as conn:
                await work(conn)
        except Exception as exc:
            return classify(exc)
        raise AssertionError("no error was raised")

    return run_async(url, main, pool_size=2)


def test_lock_timeout(db_url: URL, sql: sa.Engine) -> None:
    execute(sql, "INSERT INTO users DEFAULT VALUES")
    with sql.connect() as holder:
        holder.execute(sa.text("SELECT 1 FROM users FOR UPDATE"))

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(sa.text("SET lock_timeout = '100ms'"))
            await conn.execute(sa.text("UPDATE users SET chapter = 2"))

        fault = fault_of(db_url, work)
        holder.rollback()
    assert fault == Fault("lock_timeout", "canceling statement due to lock timeout")
    assert fault.exit_code == 1


def test_statement_timeout_and_cancel(db_url: URL) -> None:
    async def slow(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SET statement_timeout = '100ms'"))
        await conn.execute(sa.text("SELECT pg_sleep(5)"))

    assert fault_of(db_url, slow) == Fault("statement_timeout",
                                           "canceling statement due to statement timeout")

    async def cancelled(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT pg_cancel_backend(pg_backend_pid())"))

    assert fault_of(db_url, cancelled).reason == "query_canceled"


def test_deadlock(db_url: URL, sql: sa.Engine) -> None:
    execute(sql, "INSERT INTO users (chapter) VALUES (1), (2)")
    barrier = threading.Barrier(2)
    faults: list[Fault] = []

    def side(first: int, second: int) -> None:
        async def main(engine: Any) -> None:
            async with connection(engine) as conn:
                try:
                    await conn.execute(sa.text("UPDATE users SET relationship_score = 1"
                                               " WHERE chapter = :c"), {"c": first})
                    await asyncio.to_thread(barrier.wait, 10)
                    await conn.execute(sa.text("UPDATE users SET relationship_score = 2"
                                               " WHERE chapter = :c"), {"c": second})
                    await conn.commit()
                except Exception as exc:
                    faults.append(classify(exc))

        run_async(db_url, main, pool_size=1)

    threads = [threading.Thread(target=side, args=(1, 2)), threading.Thread(target=side,
                                                                             args=(2, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert [f.reason for f in faults] == ["deadlock"]


def test_serialization_failure(db_url: URL, sql: sa.Engine) -> None:
    execute(sql, "INSERT INTO users (chapter) VALUES (1)")

    async def main(engine: Any) -> Fault:
        async with connection(engine) as a, connection(engine) as b:
            for conn in (a, b):
                await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
                await conn.execute(sa.text("SELECT count(*) FROM users"))
            await a.execute(sa.text("UPDATE users SET chapter = 2"))
            await a.commit()
            try:
                await b.execute(sa.text("UPDATE users SET chapter = 3"))
            except Exception as exc:
                return classify(exc)
        raise AssertionError("no serialization failure")

    assert run_async(db_url, main, pool_size=2).reason == "serialization_failure"


def test_backend_terminated(db_url: URL) -> None:
    async def work(conn: AsyncConnection) -> None:
        await conn.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))

    fault = fault_of(db_url, work)
    assert fault.reason in ("backend_terminated", "connection_lost")
    assert fault.lost_connection


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("where", ["refused", "unknown database"])
def test_connect_failures_are_database_unavailable(where: str, db_url: URL) -> None:
    url = (f"postgresql://postgres@127.0.0.1:{_closed_port()}/x" if where == "refused"
           else db_url.set(drivername="postgresql", database="no_such_db").render_as_string(
               hide_password=False))

    async def main() -> Fault:
        async with open_engine(parse_database_url(url), task="test") as engine:
            try:
                async with connection(engine):
                    pass
            except Exception as exc:
                return classify(exc)
        raise AssertionError("connected")

    fault = asyncio.run(main())
    assert fault.reason == "database_unavailable"
    assert fault.exit_code == 3
    assert target_of(db_url).hosts  # the fixture's URL parses as the CLI's would
