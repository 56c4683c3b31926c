"""What went wrong, in one word a machine can act on, and what it means for the exit code.

- `database_unavailable` (exit 3): a connection could not be opened: refused, unresolvable,
  authentication failed, too many clients, the server starting up or shutting down.
- exit 1, the run failed: `lock_timeout` (SQLSTATE 55P03), `statement_timeout` (57014 from
  the timeout), `query_canceled` (57014 from someone's cancel), `deadlock` (40P01),
  `serialization_failure` (40001), `backend_terminated` (our session ended by the server:
  `pg_terminate_backend`, a shutdown, an idle timeout: 57P01, 57P02, 57P05, 25P03),
  `connection_lost` (the connection broke mid-run with no word from the server: class 08, a
  closed socket), `error` (anything else).

Messages are the server's primary message (never the SQL statement, never its parameters),
masked, on one line and bounded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

import psycopg
from sqlalchemy.exc import DBAPIError

from crontask_jobs.db import ConnectFailed
from crontask_jobs.messages import describe, safe_text

DATABASE_UNAVAILABLE: Final = "database_unavailable"
LOCK_TIMEOUT: Final = "lock_timeout"
STATEMENT_TIMEOUT: Final = "statement_timeout"
QUERY_CANCELED: Final = "query_canceled"
DEADLOCK: Final = "deadlock"
SERIALIZATION_FAILURE: Final = "serialization_failure"
BACKEND_TERMINATED: Final = "backend_terminated"
CONNECTION_LOST: Final = "connection_lost"
ERROR: Final = "error"

EXIT_FAILED: Final = 1
EXIT_DATABASE: Final = 3

_BY_SQLSTATE: Final = {
    "55P03": LOCK_TIMEOUT,
    "40P01": DEADLOCK,
    "40001": SERIALIZATION_FAILURE,
    "57P01": BACKEND_TERMINATED,
    "57P02": BACKEND_TERMINATED,
    "57P05": BACKEND_TERMINATED,
    "25P03": BACKEND_TERMINATED,
    "57P03": DATABASE_UNAVAILABLE,
    "53300": DATABASE_UNAVAILABLE,
}
_CONNECTION_REASONS: Final = frozenset({DATABASE_UNAVAILABLE, BACKEND_TERMINATED,
                                        CONNECTION_LOST})
_SQLALCHEMY_NOISE: Final = re.compile(r"\s*(\[SQL:|\[parameters:|\(Background on this error).*",
                                      re.DOTALL)


@dataclass(frozen=True)
class Fault:
    reason: str
    message: str

    @property
    def exit_code(self) -> int:
        return EXIT_DATABASE if self.reason == DATABASE_UNAVAILABLE else EXIT_FAILED

    @property
    def lost_connection(self) -> bool:
        """The connection (not the work) failed: whatever ran on it was rolled back."""
        return self.reason in _CONNECTION_REASONS


def _chain(exc: BaseException) -> list[BaseException]:
    """exc, the driver error SQLAlchemy wraps, and the causes, without cycles."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        orig = getattr(item, "orig", None)
        todo += [orig if isinstance(orig, BaseException) else None,
                 item.__cause__, item.__context__]
    return seen


def _driver_message(err: psycopg.Error) -> str:
    primary = err.diag.message_primary if err.sqlstate else None
    return primary or describe(err)


def classify(exc: BaseException) -> Fault:
    """The reason and a safe message for any exception a run can meet. Never raises."""
    chain = _chain(exc)
    driver = next((e for e in chain if isinstance(e, psycopg.Error)), None)
    connecting = any(isinstance(e, ConnectFailed) for e in chain)
    message = _driver_message(driver) if driver is not None else _generic_message(exc)
    if connecting:
        return Fault(DATABASE_UNAVAILABLE, safe_text(message))
    sqlstate = (driver.sqlstate or "") if driver is not None else ""
    if sqlstate == "57014":
        reason = STATEMENT_TIMEOUT if "statement timeout" in message else QUERY_CANCELED
    elif sqlstate in _BY_SQLSTATE:
        reason = _BY_SQLSTATE[sqlstate]
    elif sqlstate.startswith("08"):
        reason = CONNECTION_LOST
    elif sqlstate.startswith("28"):
        reason = DATABASE_UNAVAILABLE
    elif driver is not None and not sqlstate and isinstance(driver, psycopg.OperationalError):
        reason = CONNECTION_LOST  # the socket closed or broke: no SQLSTATE to tell
    elif any(isinstance(e, DBAPIError) and e.connection_invalidated for e in chain):
        reason = CONNECTION_LOST
    else:
        reason = ERROR
    return Fault(reason, safe_text(message))


def _generic_message(exc: BaseException) -> str:
    """`Type: message`, without the SQL and parameters SQLAlchemy appends to its messages."""
    text = _SQLALCHEMY_NOISE.sub("", describe(exc)).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
