"""Alembic environment: runs on the connection `crontask_jobs.migrate` hands it.

The caller holds an advisory lock on that connection, so two pods migrating at once take
turns instead of racing on DDL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from crontask_jobs.models import metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `crontask-job migrate`, which supplies the connection")
_run(connection)
