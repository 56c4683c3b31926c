"""Database tier fixtures: one real PostgreSQL server per session, one fresh database per test.

Without DATABASE_URL a throwaway server is started with hack/postgres.sh in a temp directory
(stopped and removed at the end); with it, that server is used and must allow CREATE DATABASE.
The schema is migrated once into a template database; each test gets `CREATE DATABASE ...
TEMPLATE`, which copies files and takes tens of milliseconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from crontask_jobs.dburl import parse_database_url
from crontask_jobs.migrate import upgrade

REPO = Path(__file__).resolve().parents[2]


def _admin_engine(url: URL) -> sa.Engine:
    return sa.create_engine(url.set(drivername="postgresql+psycopg"),
                            isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture(scope="session")
def server_url() -> Iterator[URL]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield make_url(given)
        return
    workdir = tempfile.mkdtemp(prefix="crontask-test-pg-")
    os.chmod(workdir, 0o755)
    env = {**os.environ, "CRONTASK_PG_DIR": os.path.join(workdir, "pg")}
    out = subprocess.run([str(REPO / "hack/postgres.sh"), "start"], env=env, check=True,
                         capture_output=True, text=True, timeout=120)
    try:
        yield make_url(out.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run([str(REPO / "hack/postgres.sh"), "destroy"], env=env, check=False,
                       capture_output=True, timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(server_url: URL) -> Iterator[str]:
    name = f"crontask_tpl_{uuid.uuid4().hex[:8]}"
    admin = _admin_engine(server_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    upgrade(parse_database_url(server_url.set(database=name).render_as_string(
        hide_password=False)))
    try:
        yield name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db_url(server_url: URL, template_db: str) -> Iterator[URL]:
    """A fresh, migrated database for one test (SQLAlchemy URL with the psycopg driver)."""
    name = f"crontask_t_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine(server_url)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"'))
    try:
        yield server_url.set(database=name, drivername="postgresql+psycopg")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def libpq_url(db_url: URL) -> str:
    """The same database as a libpq URL, as DATABASE_URL is given to the CLI."""
    return db_url.set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def sql(db_url: URL) -> Iterator[sa.Engine]:
    """A synchronous engine for arranging and asserting, separate from the code under test."""
    engine = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    try:
        yield engine
    finally:
        engine.dispose()
