"""The public tables as SQLAlchemy Core metadata.

The schema itself is owned by the Alembic migrations (which are frozen history); this mirror
exists for typed inserts in code and tests, and a db test checks the two agree on columns.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = sa.MetaData()

def _uuid_pk() -> sa.Column[uuid.UUID]:
    return sa.Column("id", UUID(as_uuid=True), primary_key=True,
                     server_default=sa.text("gen_random_uuid()"))


_now = sa.text("now()")
_ts = sa.DateTime(timezone=True)

users = sa.Table(
    "users", metadata,
    _uuid_pk(),
    sa.Column("chapter", sa.SmallInteger, nullable=False, server_default="1"),
    sa.Column("relationship_score", sa.Numeric(5, 2), nullable=False, server_default="50"),
    sa.Column("last_interaction_at", _ts, nullable=False, server_default=_now),
    sa.Column("last_decayed_at", _ts),
    sa.Column("game_status", sa.Text, nullable=False, server_default="active"),
    sa.Column("created_at", _ts, nullable=False, server_default=_now),
    sa.Column("updated_at", _ts, nullable=False, server_default=_now),
)

conversations = sa.Table(
    "conversations", metadata,
    _uuid_pk(),
    sa.Column("user_id", UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="active"),
    sa.Column("last_message_at", _ts, nullable=False, server_default=_now),
    sa.Column("created_at", _ts, nullable=False, server_default=_now),
    sa.Column("updated_at", _ts, nullable=False, server_default=_now),
    sa.Column("processing_started_at", _ts),
    sa.Column("processed_at", _ts),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failure_reason", sa.Text),
    sa.Column("claimed_by", UUID(as_uuid=True)),
    sa.Column("summary", sa.Text),
    sa.Column("message_count", sa.Integer),
)

messages = sa.Table(
    "messages", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("conversation_id", UUID(as_uuid=True),
              sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("content", sa.Text, nullable=False),
    sa.Column("created_at", _ts, nullable=False, server_default=_now),
)

# user_id names a user, enforced by statement-level triggers instead of a foreign key
# (migration 0003): the same guarantees, checked once per statement rather than once per row.
score_history = sa.Table(
    "score_history", metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=False), primary_key=True),
    sa.Column("user_id", UUID(as_uuid=True), nullable=False),
    sa.Column("score_before", sa.Numeric(5, 2), nullable=False),
    sa.Column("score_after", sa.Numeric(5, 2), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("execution_id", UUID(as_uuid=True)),
    sa.Column("created_at", _ts, nullable=False, server_default=_now),
)

job_executions = sa.Table(
    "job_executions", metadata,
    _uuid_pk(),
    sa.Column("job_name", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False, server_default="running"),
    sa.Column("started_at", _ts, nullable=False, server_default=_now),
    sa.Column("completed_at", _ts),
    sa.Column("result", JSONB),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.Text),
)
