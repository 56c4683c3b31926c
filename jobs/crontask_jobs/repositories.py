"""SQL the tasks share: the job_executions lifecycle.

A run's row is inserted and committed before any work starts, so a pod killed mid-run leaves a
`running` row behind that `recover` later closes as abandoned, rather than leaving no trace.
Lock policy: a run's own row is only ever updated by that run (its finish) and by `recover`
(abandoned rows, SKIP LOCKED), each in a short statement; `finish` waits, bounded by the
session's lock_timeout.
"""

from __future__ import annotations

import json
import socket
import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from crontask_jobs import masking
from crontask_jobs.messages import safe_text


def _document(result: dict[str, Any]) -> str:
    """A result as JSON for a jsonb column, every string in it masked."""
    return json.dumps(masking.mask_document(result, masking.active()))


class JobExecutionRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def has_recent_execution(self, job_name: str, window: timedelta) -> bool:
        """A completed execution of `job_name` whose completed_at lies within `window`."""
        row = await self._conn.execute(
            sa.text(
                "SELECT 1 FROM job_executions WHERE job_name = :name AND status = 'completed'"
                " AND completed_at > now() - :window LIMIT 1"
            ),
            {"name": job_name, "window": window},
        )
        return row.first() is not None

    async def start(self, job_name: str) -> uuid.UUID:
        row = await self._conn.execute(
            sa.text(
                "INSERT INTO job_executions (job_name, status, host)"
                " VALUES (:name, 'running', :host) RETURNING id"
            ),
            {"name": job_name, "host": socket.gethostname()},
        )
        return uuid.UUID(str(row.scalar_one()))

    async def record_skip(self, job_name: str, result: dict[str, Any]) -> uuid.UUID:
        row = await self._conn.execute(
            sa.text(
                "INSERT INTO job_executions (job_name, status, completed_at, result, host)"
                " VALUES (:name, 'skipped', now(), CAST(:result AS jsonb), :host) RETURNING id"
            ),
            {"name": job_name, "result": _document(result), "host": socket.gethostname()},
        )
        return uuid.UUID(str(row.scalar_one()))

    async def finish(self, execution_id: uuid.UUID, status: str, result: dict[str, Any],
                     error: str | None = None) -> None:
        """Close a run's row; only a row still `running` is closed (recover may have won)."""
        await self._conn.execute(
            sa.text(
                "UPDATE job_executions SET status = :status, completed_at = now(),"
                " result = CAST(:result AS jsonb), error = :error"
                " WHERE id = :id AND status = 'running'"
            ),
            {"id": execution_id, "status": status, "result": _document(result),
             "error": None if error is None else safe_text(error)},
        )
