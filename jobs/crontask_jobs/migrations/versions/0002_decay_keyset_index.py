"""decay walks users in chunks along (chapter, last_interaction_at, id) of the active users.

The keyset index replaces users_decay_candidates_idx. It also no longer names
relationship_score (the old predicate did), so decay's updates, which change only the score, the
decay clock and updated_at, can be HOT updates. Both indexes are built and dropped
CONCURRENTLY, outside a transaction, so a migration on a large users table never blocks writes;
an invalid index left by an interrupted build is dropped and built again.

Revision ID: 0002
Revises: 0001
Create Date: 2025-06-01
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INVALID_LEFTOVER = """
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                WHERE c.relname = 'users_decay_keyset_idx' AND NOT i.indisvalid) THEN
        DROP INDEX users_decay_keyset_idx;
    END IF;
END $$
"""


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(INVALID_LEFTOVER)
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS users_decay_keyset_idx"
                   " ON users (chapter, last_interaction_at, id) WHERE game_status = 'active'")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS users_decay_candidates_idx")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS users_decay_candidates_idx"
                   " ON users (chapter, last_interaction_at)"
                   " WHERE game_status = 'active' AND relationship_score > 0")
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS users_decay_keyset_idx")
