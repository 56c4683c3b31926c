"""The bench's server and databases: a throwaway server, a seeded template per size, and a fresh
copy of it for every measurement, so each one starts from the same rows in the same pages."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from crontask_jobs.dburl import DatabaseTarget, parse_database_url
from crontask_jobs.migrate import upgrade

REPO = Path(__file__).resolve().parents[1]
# The bench's own server: sized for the data (shared_buffers) and for long writes (max_wal_size),
# with pg_stat_statements for the process profile. Durability off, as in hack/postgres.sh:
# a benchmark of the jobs and of PostgreSQL's own floor, not of a disk.
SERVER_OPTIONS = ("-c shared_buffers=1GB -c max_wal_size=4GB -c checkpoint_timeout=30min"
                  " -c shared_preload_libraries=pg_stat_statements -c track_io_timing=on")
# Trust authentication ignores it, but the jobs parse and mask it as they would in production.
BENCH_PASSWORD = "bench-secret-not-used"


@contextmanager
def server(extra_options: str = "") -> Iterator[URL]:
    """DATABASE_URL's server, or a throwaway one started with hack/postgres.sh."""
    if os.environ.get("DATABASE_URL"):
        yield make_url(os.environ["DATABASE_URL"]).set(drivername="postgresql+psycopg")
        return
    work = tempfile.mkdtemp(prefix="crontask-bench-")
    os.chmod(work, 0o755)
    env = {**os.environ, "CRONTASK_PG_DIR": f"{work}/pg",
           "CRONTASK_PG_OPTS": f"{SERVER_OPTIONS} {extra_options}".strip()}
    script = str(REPO / "hack/postgres.sh")
    out = subprocess.run([script, "start"], env=env, check=True, capture_output=True, text=True)
    try:
        yield make_url(out.stdout.split()[-1]).set(drivername="postgresql+psycopg")
    finally:
        subprocess.run([script, "destroy"], env=env, check=False, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def admin(url: URL) -> sa.Engine:
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


def libpq_url(url: URL) -> str:
    """The database as DATABASE_URL gives it to the CLI (with a password to mask)."""
    if url.password is None:
        url = url.set(password=BENCH_PASSWORD)
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def target(url: URL) -> DatabaseTarget:
    return parse_database_url(libpq_url(url))


def engine(url: URL) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def scalar(url: URL, statement: str, params: dict[str, object] | None = None) -> object:
    e = engine(url)
    try:
        with e.connect() as c:
            return c.execute(sa.text(statement), params or {}).scalar()
    finally:
        e.dispose()


def settings(url: URL) -> dict[str, str]:
    names = ["server_version", "shared_buffers", "work_mem", "max_wal_size", "fsync",
             "synchronous_commit", "full_page_writes"]
    e = engine(url)
    try:
        with e.connect() as c:
            return {n: str(c.execute(sa.text(f"SHOW {n}")).scalar()) for n in names}
    finally:
        e.dispose()


def create(url: URL, prefix: str) -> URL:
    """A new, migrated database."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    a = admin(url)
    with a.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    a.dispose()
    db = url.set(database=name)
    upgrade(target(db))
    return db


def drop(db: URL) -> None:
    a = admin(db.set(database="postgres"))
    with a.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{db.database}" WITH (FORCE)'))
    a.dispose()


def checkpoint(db: URL) -> None:
    """Write out what earlier steps left dirty, so it is not charged to the next measurement."""
    a = admin(db)
    with a.connect() as c:
        c.execute(sa.text("CHECKPOINT"))
    a.dispose()


@contextmanager
def copy_of(template: URL, label: str) -> Iterator[URL]:
    """A file copy of the template database (identical pages), dropped afterwards."""
    name = f"{template.database}_{label}"
    a = admin(template.set(database="postgres"))
    version = int(str(scalar(template, "SHOW server_version_num")))
    strategy = " STRATEGY FILE_COPY" if version >= 150000 else ""
    t0 = time.perf_counter()
    with a.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        c.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template.database}"{strategy}'))
    a.dispose()
    db = template.set(database=name)
    checkpoint(db)
    if time.perf_counter() - t0 > 5:
        print(f"    (copied the template for {label} in {time.perf_counter() - t0:.0f}s)",
              flush=True)
    try:
        yield db
    finally:
        drop(db)


def wal_lsn(db: URL) -> int:
    return int(str(scalar(db, "SELECT pg_current_wal_lsn() - '0/0'")))
