"""What a pipeline stage is, for the built-in stages and for users' own.

A stage is an async function of a StageContext. It runs inside the conversation's transaction,
under its own savepoint: if it raises or times out, its writes are rolled back and, unless it
is critical, the next stage runs. `state` carries values from one stage to the next. The
pipeline owns the transaction: a stage may open savepoints of its own, but a stage that commits
or rolls back fails its conversation.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection


class StageError(Exception):
    """A stage's expected failure: its message goes to the report as is."""


@dataclass
class StageContext:
    conversation_id: uuid.UUID
    user_id: uuid.UUID
    last_message_at: datetime
    execution_id: uuid.UUID
    conn: AsyncConnection
    """The conversation's connection, inside its transaction and the stage's savepoint."""
    state: dict[str, Any] = field(default_factory=dict)


StageFn = Callable[[StageContext], Awaitable[None]]


@dataclass(frozen=True)
class Stage:
    name: str
    run: StageFn
    critical: bool = True
    timeout: timedelta | None = None
    """The stage's own default; `--stage-timeout NAME=DUR` overrides it."""
