"""What every task does around its work: timestamps, its result document, and retrying the
bookkeeping that must happen even when the server was briefly away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crontask_contract.report import RunReport
from crontask_jobs.db import connection
from crontask_jobs.faults import DEADLOCK, LOCK_TIMEOUT, SERIALIZATION_FAILURE, Fault, classify

log = logging.getLogger(__name__)

T = TypeVar("T")
TERMINATED: Final = "terminated"
"""The reason of a run stopped by SIGTERM (Kubernetes' activeDeadlineSeconds, a deleted pod)."""
_TRANSIENT: Final = frozenset({LOCK_TIMEOUT, DEADLOCK, SERIALIZATION_FAILURE})


def utc_now() -> str:
    """RFC 3339 UTC with second precision, the form the report and the operator use."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def execution_result(report: RunReport, **details: Any) -> dict[str, Any]:
    """job_executions.result: the run report in its own shape (the same keys, written by the
    same code), plus task-specific detail the 4 KiB report has no room for."""
    return {**report.to_dict(), **details}


async def retrying(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], *,
                   budget_s: float) -> T | Fault:
    """`work` on a fresh connection, again after a connection fault or a transient conflict
    (backing off from 0.25 s to 4 s) until `budget_s` has passed; then the last fault.
    A restarting server is back within seconds; a dead one is `recover`'s to clean up after."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget_s
    delay = 0.25
    while True:
        try:
            async with connection(engine) as conn:
                return await work(conn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            fault = classify(exc)
            retry = fault.lost_connection or fault.reason in _TRANSIENT
            if not retry or loop.time() + delay > deadline:
                log.error("giving up on the run's bookkeeping: %s: %s", fault.reason,
                          fault.message)
                return fault
            log.warning("the run's bookkeeping failed (%s: %s); retrying in %.2gs",
                        fault.reason, fault.message, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 4.0)
