"""process: the final status change as one function that refuses a conversation the run no
longer owns.

The pipeline's last step marks its conversation `processed` only if it is still `processing`
under this run's owner token (recover may have failed it meanwhile, or another run re-claimed
it after recover handed it back). Done as a plain UPDATE, the run had to read the row count
before deciding between COMMIT and ROLLBACK: two round trips. As a function that raises when
the guard matches nothing, the update and the COMMIT go in one message: a lost conversation's
error aborts the transaction before the COMMIT, so nothing of it is committed. The error code
`CT409` (no standard class uses `CT`) is what the engine recognises as "lost".

Creates a function only: no lock on any table, safe at any time.

Revision ID: 0004
Revises: 0003
Create Date: 2025-07-02
"""
from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE FUNCTION crontask_finish_processed(conversation uuid, owner uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE conversations
       SET status = 'processed', processed_at = now(), updated_at = now(),
           failure_reason = NULL
     WHERE id = conversation AND status = 'processing' AND claimed_by = owner;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation % is no longer claimed by run %', conversation, owner
            USING ERRCODE = 'CT409';
    END IF;
END
$$
"""

DOWNGRADE = "DROP FUNCTION crontask_finish_processed(uuid, uuid)"


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
