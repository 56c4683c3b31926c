"""Helpers for the database tests: seeding rows, running a task in its own event loop."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from crontask_jobs.db import open_engine
from crontask_jobs.dburl import DatabaseTarget, parse_database_url

T = TypeVar("T")
HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def target_of(url: URL) -> DatabaseTarget:
    """The parsed DATABASE_URL of a test database, as the CLI would build it."""
    return parse_database_url(url.set(drivername="postgresql").render_as_string(
        hide_password=False))


def run_async(url: URL, fn: Callable[[AsyncEngine], Awaitable[T]], pool_size: int = 12) -> T:
    async def main() -> T:
        async with open_engine(target_of(url), task="test", pool_size=pool_size) as engine:
            return await fn(engine)

    return asyncio.run(main())


def run_simultaneously(url: URL, n: int, fn: Callable[[AsyncEngine], Awaitable[T]],
                      pool_size: int) -> list[T]:
    """Start `n` runs at the same instant, each in its own thread, event loop and engine, as
    separate pods would; each connects before the barrier so connection set-up cannot
    serialise them. Raises the first error of any run."""
    barrier = threading.Barrier(n)
    results: list[T] = []
    errors: list[BaseException] = []

    async def one_run() -> T:
        async with open_engine(target_of(url), task="test", pool_size=pool_size) as engine:
            async with engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
            barrier.wait(timeout=30)
            return await fn(engine)

    def thread_main() -> None:
        try:
            results.append(asyncio.run(one_run()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=thread_main) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    assert len(results) == n, f"{n - len(results)} run(s) did not finish"
    return results


def execute(engine: sa.Engine, statement: str, params: dict[str, Any] | None = None) -> Any:
    with engine.begin() as conn:
        return conn.execute(sa.text(statement), params or {})


def scalar(engine: sa.Engine, statement: str, params: dict[str, Any] | None = None) -> Any:
    with engine.begin() as conn:
        return conn.execute(sa.text(statement), params or {}).scalar()


def rows(engine: sa.Engine, statement: str, params: dict[str, Any] | None = None) -> list[Any]:
    with engine.begin() as conn:
        return list(conn.execute(sa.text(statement), params or {}))


def add_user(engine: sa.Engine, *, chapter: int = 1, score: float = 50,
             inactive_hours: float = 0, decayed_hours_ago: float | None = None) -> uuid.UUID:
    return uuid.UUID(str(scalar(engine, """
        INSERT INTO users (chapter, relationship_score, last_interaction_at, last_decayed_at)
        VALUES (:chapter, :score, now() - make_interval(secs => :inactive),
                CASE WHEN CAST(:decayed AS float8) IS NULL THEN NULL
                     ELSE now() - make_interval(secs => CAST(:decayed AS float8)) END)
        RETURNING id""", {"chapter": chapter, "score": score, "inactive": inactive_hours * 3600,
                          "decayed": None if decayed_hours_ago is None
                          else decayed_hours_ago * 3600})))


def add_messages(engine: sa.Engine, ids: Sequence[uuid.UUID], messages: int) -> None:
    """`messages` messages in each of the conversations `ids`, alternating user and assistant."""
    if messages:
        execute(engine, """
            INSERT INTO messages (conversation_id, role, content, created_at)
            SELECT c, CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END,
                   'message ' || i || ' about tomatoes and gardening',
                   now() - interval '2 hours' + make_interval(secs => i)
              FROM unnest(CAST(:ids AS uuid[])) AS c, generate_series(1, :m) AS i""",
                {"ids": list(ids), "m": messages})


def add_conversations(engine: sa.Engine, n: int, *, status: str = "active",
                      idle_minutes: float = 60, updated_minutes_ago: float = 0,
                      messages: int = 2) -> list[uuid.UUID]:
    """n conversations of one fresh user, each with `messages` messages."""
    user = add_user(engine)
    ids = [uuid.UUID(str(r[0])) for r in rows(engine, """
        INSERT INTO conversations (user_id, status, last_message_at, updated_at)
        SELECT :user, :status, now() - make_interval(secs => :idle),
               now() - make_interval(secs => :upd)
          FROM generate_series(1, :n)
        RETURNING id""", {"user": user, "status": status, "idle": idle_minutes * 60,
                          "upd": updated_minutes_ago * 60, "n": n})]
    add_messages(engine, ids, messages)
    return ids


def cli(args: Sequence[str], database_url: str | None, *, timeout: float = 60,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONTASK_")}
    env.pop("DATABASE_URL", None)
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(HERE)
    env.update(extra_env or {})
    return subprocess.run([sys.executable, "-m", "crontask_jobs", *args], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def popen(args: Sequence[str], database_url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRONTASK_")}
    env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(HERE)
    return subprocess.Popen([sys.executable, "-m", "crontask_jobs", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


LOG_TABLE = "CREATE TABLE processed_log (conversation_id uuid, execution_id uuid)"




def stall_history_of(engine: sa.Engine, user_id: object) -> None:
    """The chunk that writes `user_id`'s history row sleeps (60 s) until its session is ended:
    a chunk in flight, at a user the test chose, for a fault to cut."""
    execute(engine, f"""
        CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_id = '{uuid.UUID(str(user_id))}' THEN PERFORM pg_sleep(60); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER stall AFTER INSERT ON score_history
            FOR EACH ROW EXECUTE FUNCTION stall();""")


def slow_history_inserts(engine: sa.Engine, seconds: float) -> None:
    """Every chunk takes at least `seconds` longer (one sleep per history INSERT statement),
    so a run is still midway when a test acts on it. DROP TRIGGER slow to end it."""
    execute(engine, f"""
        CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep({float(seconds)}); RETURN NULL; END $$;
        CREATE TRIGGER slow AFTER INSERT ON score_history
            FOR EACH STATEMENT EXECUTE FUNCTION slow();""")
