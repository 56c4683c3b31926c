"""Whether the database's schema is new enough for this code, checked before every run.

A job started against a database that was never migrated, or is behind (the chart's
migration hook failed or was skipped, a restore of an old backup), would otherwise fail
somewhere in its work with whatever is missing ("relation job_executions does not exist",
"function crontask_finish_processed does not exist"), perhaps after part of it was done. It
fails first instead, having written nothing, with what to do.

A revision this code does not know is a newer release's: its migrations only add (a rolling
upgrade migrates first, while the previous release's pods still run), so the run goes on.
`REVISIONS` is the migrations' chain, oldest first; a unit test holds it equal to Alembic's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from crontask_jobs.db import connection

log = logging.getLogger(__name__)

REVISIONS: Final = ("0001", "0002", "0003", "0004")
REQUIRED: Final = REVISIONS[-1]
MIGRATE_HINT: Final = "run `crontask-job migrate` (the chart runs it as a hook) first"


def schema_problem(current: Iterable[str] | None) -> str | None:
    """The error for a schema this code cannot run on, or None (pure).

    `current`: the rows of `alembic_version`, or None when the table does not exist."""
    found = sorted({str(v) for v in current}) if current is not None else []
    if not found:
        return f"the database has no crontask schema (never migrated); {MIGRATE_HINT}"
    if any(v not in REVISIONS or REVISIONS.index(v) >= REVISIONS.index(REQUIRED)
           for v in found):
        return None
    shown = ", ".join(v[:40] for v in found[:3]) + (", ..." if len(found) > 3 else "")
    return (f"the database schema is at revision {shown}, and this release needs {REQUIRED};"
            f" {MIGRATE_HINT}")


class SchemaBehind(Exception):
    """The database's schema is older than this release needs: nothing was done."""


UNDEFINED_TABLE: Final = "42P01"
INSUFFICIENT_PRIVILEGE: Final = "42501"
READ_REVISIONS: Final = sa.text("SELECT version_num FROM alembic_version")


async def ensure_schema(engine: AsyncEngine) -> None:
    """Raise SchemaBehind unless the schema is at (or past) REQUIRED: one short read.

    A role that may not read `alembic_version` (a runtime role granted only the tables the
    jobs use) is not refused: the check is a guard, and a deployment that ran before it existed
    must keep running. It says, once a run, that the revision went unchecked."""
    async with connection(engine) as conn:
        try:
            found: list[str] | None = [str(v) for v in (await conn.execute(
                READ_REVISIONS)).scalars().all()]
        except DBAPIError as exc:
            state = getattr(exc.orig, "sqlstate", None)
            if state == INSUFFICIENT_PRIVILEGE:
                log.warning("the schema revision is not checked: this role may not read"
                            " alembic_version (grant it SELECT to have every run check it)")
                return
            if state != UNDEFINED_TABLE:
                raise
            found = None
        await conn.rollback()
    problem = schema_problem(found)
    if problem is not None:
        raise SchemaBehind(problem)
