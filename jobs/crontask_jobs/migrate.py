"""`crontask-job migrate`: alembic upgrade head, safe to run from several pods at once.

A session-level advisory lock serialises concurrent migrators: the second one waits, then
finds the schema at head and does nothing. The lock lives on the very connection Alembic
uses, so it is released when the pod dies. A waiting migrator polls (`pg_try_advisory_lock`
every LOCK_POLL_SECONDS) instead of blocking in `pg_advisory_lock`: a blocked statement holds
a snapshot, and `CREATE INDEX CONCURRENTLY` in the running migration waits for every older
snapshot to go, which would deadlock the two.
"""

from __future__ import annotations

import logging
import time
from importlib.resources import files
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import DBAPIError

from crontask_jobs.db import ConnectFailed, make_sync_engine
from crontask_jobs.dburl import DatabaseTarget

log = logging.getLogger(__name__)

MIGRATION_LOCK_KEY: Final = 0x6372_6F6E_6D69_67  # "cronmig"
LOCK_POLL_SECONDS: Final = 0.5


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("crontask_jobs") / "migrations"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _lock(conn: sa.Connection) -> None:
    waited = 0.0
    while True:
        got = conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"),
                           {"k": MIGRATION_LOCK_KEY}).scalar_one()
        conn.commit()
        if got:
            return
        if waited % 30 < LOCK_POLL_SECONDS:
            log.info("migrate: waiting for another migration to finish")
        time.sleep(LOCK_POLL_SECONDS)
        waited += LOCK_POLL_SECONDS


def upgrade(target: DatabaseTarget) -> tuple[str | None, str | None]:
    """Upgrade to head; return the revisions before and after."""
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    engine = make_sync_engine(target)
    try:
        try:
            connected = engine.connect()
        except DBAPIError as exc:
            raise ConnectFailed("could not connect to the database") from exc
        with connected as conn:
            _lock(conn)
            try:
                before = MigrationContext.configure(conn).get_current_revision()
                conn.commit()
                cfg = alembic_config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                conn.commit()
                after = MigrationContext.configure(conn).get_current_revision()
                conn.commit()
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()
    return before, after
