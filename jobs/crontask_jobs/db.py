"""Database URLs, engines, and telling "the database is unreachable" apart from other failures.

Users give a libpq URL (`postgresql://user:pass@host:port/db`), the form every PostgreSQL tool
accepts; SQLAlchemy needs its driver named. The password must never reach a log or a report,
so every message that could contain the URL goes through `mask_url` / `scrub`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

DRIVER: Final = "postgresql+psycopg"
_ACCEPTED_SCHEMES: Final = ("postgresql", "postgres", "postgresql+psycopg")


class DatabaseUrlError(ValueError):
    pass


class DatabaseUnavailable(RuntimeError):
    """The server cannot be reached or refuses our credentials: not the run's own fault."""


def to_sqlalchemy_url(raw: str) -> URL:
    text = raw.strip()
    if not text:
        raise DatabaseUrlError("DATABASE_URL is empty")
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme not in _ACCEPTED_SCHEMES:
        raise DatabaseUrlError(
            f"DATABASE_URL must start with postgresql:// (got scheme {scheme or 'none'!r})"
        )
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise DatabaseUrlError("DATABASE_URL is not a valid URL") from exc
    return url.set(drivername=DRIVER)


def mask_url(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def scrub(text: str, url: URL | None) -> str:
    """Remove the password from any text that may have echoed a connection string."""
    if url is not None and url.password:
        text = text.replace(str(url.password), "***")
    return text


def make_engine(url: URL, *, pool_size: int = 5,
                application_name: str = "crontask-job") -> AsyncEngine:
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=False,
        connect_args={"application_name": application_name, "connect_timeout": 10},
    )


@asynccontextmanager
async def open_engine(url: URL, *, pool_size: int = 5) -> AsyncIterator[AsyncEngine]:
    """An engine for one run, its connections closed however the run ends."""
    engine = make_engine(url, pool_size=pool_size)
    try:
        yield engine
    finally:
        await engine.dispose()


def make_sync_engine(url: URL) -> sa.Engine:
    return sa.create_engine(
        url, poolclass=sa.pool.NullPool,
        connect_args={"application_name": "crontask-job migrate", "connect_timeout": 10},
    )


def is_connection_failure(exc: BaseException) -> bool:
    """True for a failure to reach or authenticate to the server (exit code 3).

    psycopg reports refused connections, DNS failures, bad passwords and a server that went
    away mid-run as OperationalError; SQLSTATE class 08 (connection exception) and 28 (invalid
    authorization) say the same when the server answered.
    """
    if isinstance(exc, DatabaseUnavailable):
        return True
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return sqlstate[:2] in {"08", "28", "57"}
    return False


def describe_connection_failure(exc: BaseException, url: URL | None) -> str:
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    detail = lines[0] if lines else type(orig).__name__
    where = mask_url(url) if url is not None else "the database"
    return scrub(f"database unreachable at {where}: {detail}", url)
