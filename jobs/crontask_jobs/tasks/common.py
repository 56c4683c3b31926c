"""What every task does around its work: timestamps, and closing its execution row on failure."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from crontask_jobs.repositories import JobExecutionRepository

log = logging.getLogger(__name__)


def utc_now() -> str:
    """RFC 3339 UTC with second precision, the form the report and the operator use."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


class TaskFailed(Exception):
    """A run that started (it may have an execution row) and then failed."""

    def __init__(self, message: str, execution_id: uuid.UUID | None,
                 cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.execution_id = execution_id
        self.cause = cause


async def close_failed(engine: AsyncEngine, execution_id: uuid.UUID, error: str) -> None:
    """Best effort: if the database is gone, `recover` closes the row later as abandoned."""
    try:
        async with engine.begin() as conn:
            await JobExecutionRepository(conn).finish(execution_id, "failed", {}, error[:2000])
    except Exception as exc:  # the original failure matters more than this one
        log.warning("could not mark execution %s failed: %s", execution_id,
                    type(exc).__name__)
