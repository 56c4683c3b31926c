"""`crontask-job migrate`: alembic upgrade head, safe to run from several pods at once.

A session-level advisory lock serialises concurrent migrators: the second one waits, then
finds the schema at head and does nothing. The lock lives on the very connection Alembic
uses, so it is released when the pod dies.
"""

from __future__ import annotations

import logging
from importlib.resources import files
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL

from crontask_jobs.db import make_sync_engine

MIGRATION_LOCK_KEY: Final = 0x6372_6F6E_6D69_67  # "cronmig"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("crontask_jobs") / "migrations"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def upgrade(url: URL) -> tuple[str | None, str | None]:
    """Upgrade to head; return the revisions before and after."""
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    engine = make_sync_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            conn.commit()
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
