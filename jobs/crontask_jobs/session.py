"""Limits every job session sets on the server, so PostgreSQL itself releases what a hung,
frozen or partitioned pod holds, and the client keywords that find a dead server.

- `statement_timeout` 60s (process stages: the stage's own timeout): no statement runs
  unbounded, and a stage's statement is cancelled by the server when the stage's time is up.
- `lock_timeout` 5s (process stages: the stage's own timeout): a backstop. Each statement that
  can meet another session's row lock states its policy (SKIP LOCKED, or the stage timeout);
  this bounds any other wait (DDL, a frozen peer).
- `idle_in_transaction_session_timeout` 30s (process: longest stage timeout + 10s): a frozen pod
  (SIGSTOP) holding row locks is disconnected, releasing them; a stage may leave its
  transaction idle for up to its own timeout.
- `idle_session_timeout` 60s (PostgreSQL 14+): a frozen decay pod's session, which holds
  decay's advisory lock between statements, is closed.
- `tcp_keepalives_idle`/`_interval`/`_count` 30s/10s/3 and `tcp_user_timeout` 60s: the server
  drops a pod that vanished from the network within about a minute.
- `TimeZone` UTC: interval arithmetic on timestamps is exact (no day of 23 or 25 hours).

Client side (libpq keywords, unless DATABASE_URL sets them): `connect_timeout=10`,
`keepalives=1`, `keepalives_idle=30`, `keepalives_interval=10`, `keepalives_count=3`,
`tcp_user_timeout=60000`, `application_name=crontask-job <task>`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

STATEMENT_TIMEOUT: Final = timedelta(seconds=60)
LOCK_TIMEOUT: Final = timedelta(seconds=5)
IDLE_IN_TRANSACTION_TIMEOUT: Final = timedelta(seconds=30)
STAGE_IDLE_MARGIN: Final = timedelta(seconds=10)
IDLE_SESSION_TIMEOUT: Final = timedelta(seconds=60)
MAX_TIMEOUT: Final = timedelta(milliseconds=2**31 - 1)
"""The largest value PostgreSQL's millisecond timeouts hold (about 24.8 days)."""

CLIENT_KEYWORDS: Final = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}


def milliseconds(value: timedelta) -> str:
    """A PostgreSQL timeout setting: whole milliseconds, rounded up, within its int range."""
    return str(min(max(math.ceil(value / timedelta(milliseconds=1)), 1), 2**31 - 1))


@dataclass(frozen=True)
class SessionLimits:
    statement_timeout: timedelta = STATEMENT_TIMEOUT
    lock_timeout: timedelta = LOCK_TIMEOUT
    idle_in_transaction_timeout: timedelta = IDLE_IN_TRANSACTION_TIMEOUT
    idle_session_timeout: timedelta = IDLE_SESSION_TIMEOUT
    tcp_keepalives_idle: int = 30
    tcp_keepalives_interval: int = 10
    tcp_keepalives_count: int = 3
    tcp_user_timeout: timedelta = timedelta(seconds=60)

    def settings(self, server_version: int) -> dict[str, str]:
        """The session settings, as `set_config` takes them, for a server of that version."""
        out = {
            "statement_timeout": milliseconds(self.statement_timeout),
            "lock_timeout": milliseconds(self.lock_timeout),
            "idle_in_transaction_session_timeout":
                milliseconds(self.idle_in_transaction_timeout),
            "tcp_keepalives_idle": str(self.tcp_keepalives_idle),
            "tcp_keepalives_interval": str(self.tcp_keepalives_interval),
            "tcp_keepalives_count": str(self.tcp_keepalives_count),
            "tcp_user_timeout": milliseconds(self.tcp_user_timeout),
            "TimeZone": "UTC",
        }
        if server_version >= 140000:
            out["idle_session_timeout"] = milliseconds(self.idle_session_timeout)
        return out


def limits_for_process(stage_timeouts: Iterable[float]) -> SessionLimits:
    """A pipeline's transaction may sit idle while a stage works outside the database, for up
    to the stage's timeout: the idle limit must exceed the longest one."""
    longest = max(stage_timeouts, default=0.0)
    idle = min(timedelta(seconds=longest) + STAGE_IDLE_MARGIN, MAX_TIMEOUT)
    return SessionLimits(idle_in_transaction_timeout=idle)


def client_keywords(task: str, given: dict[str, str]) -> dict[str, str]:
    """The driver's keywords: DATABASE_URL's, completed with ours where it is silent."""
    out = {**CLIENT_KEYWORDS, "application_name": f"crontask-job {task}"}
    out.update(given)
    return out
