"""decay's write path: room for HOT updates of users, and score_history's foreign key as
set-based triggers.

Measured on 1M users (BENCHMARKS.md): the per-row foreign-key check on score_history (one SPI
query per inserted row) was about a fifth of decay's time, and every decay update that found
no room on its page moved the row and inserted into both indexes of users. So:

- `users` gets `fillfactor = 90`. Decay rewrites a row's score and clocks (no indexed column),
  so with room on the page the new version is a HOT update: no index is touched. The setting
  applies to pages written from now on; existing full pages gain the room as their rows are
  updated and vacuumed (the first decay runs after this migration do that), or at once with
  `VACUUM FULL users` or pg_repack if wanted. Changing it takes a SHARE UPDATE EXCLUSIVE lock:
  it blocks no reads or writes.
- `score_history.user_id` keeps its meaning without the row-by-row foreign key: statement-level
  triggers do the same work once per statement. An insert (or a change of `user_id`) must find
  every user it names, and locks them `FOR KEY SHARE` (as the foreign key's check did) so none
  can be deleted before it commits; deleting users deletes their history; truncating users
  truncates it; changing a referenced user's id is refused. Error code `23503`
  (foreign_key_violation) as before. One writer is exempt from the insert check: decay's chunk,
  which inserts history only for users it has just updated in the same statement and so holds
  locked; it says so with `SET LOCAL crontask.score_history_users_locked = on`. The cascade on
  delete is one set-based DELETE per statement through score_history_user_created_idx.

Safe on a populated table: no scan, no rewrite. The only strong locks (ACCESS EXCLUSIVE on users
and score_history, to drop the constraint and its triggers) are taken first, with a 2-second
lock_timeout retried up to 30 times, so the migration never queues for long behind a running
transaction while blocking everyone behind it; it then holds them for milliseconds.

Revision ID: 0003
Revises: 0002
Create Date: 2025-07-01
"""
from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

LOCK_BRIEFLY = """
DO $$
DECLARE
    attempt integer := 0;
    before text := current_setting('lock_timeout');
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '2s', true);
            LOCK TABLE users, score_history IN ACCESS EXCLUSIVE MODE;
            PERFORM set_config('lock_timeout', before, true);
            RETURN;
        EXCEPTION WHEN lock_not_available THEN
            attempt := attempt + 1;
            IF attempt >= 30 THEN
                RAISE;
            END IF;
            RAISE NOTICE 'waiting for users and score_history (attempt %)', attempt;
            PERFORM pg_sleep(1);
        END;
    END LOOP;
END $$;
"""

UPGRADE = """
CREATE FUNCTION crontask_score_history_users_exist() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    wanted bigint;
    found bigint;
BEGIN
    -- decay's chunk inserts history only for users it updated (and holds) in the same
    -- statement: nothing to check.
    IF TG_OP = 'INSERT'
       AND current_setting('crontask.score_history_users_locked', true) = 'on' THEN
        RETURN NULL;
    END IF;
    SELECT count(DISTINCT user_id) INTO wanted FROM new_rows;
    -- FOR KEY SHARE, as a foreign key's check: none of them can be deleted (or change its id)
    -- before this transaction ends; a user deleted meanwhile is not found.
    SELECT count(*) INTO found
      FROM (SELECT 1 FROM users WHERE id IN (SELECT user_id FROM new_rows) FOR KEY SHARE) AS held;
    IF found < wanted THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = 'score_history.user_id must name an existing user',
            DETAIL = format('%s of %s user id(s) written to score_history are not in users',
                            wanted - found, wanted);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER score_history_users_exist_on_insert
    AFTER INSERT ON score_history REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crontask_score_history_users_exist();
CREATE TRIGGER score_history_users_exist_on_update
    AFTER UPDATE ON score_history REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION crontask_score_history_users_exist();

CREATE FUNCTION crontask_users_delete_score_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    DELETE FROM score_history WHERE user_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;

CREATE TRIGGER users_delete_score_history
    AFTER DELETE ON users REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION crontask_users_delete_score_history();

CREATE FUNCTION crontask_users_truncate_score_history() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    -- Empty already when the same TRUNCATE names score_history too (it runs after all of them).
    IF EXISTS (SELECT 1 FROM score_history) THEN
        TRUNCATE score_history;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_truncate_score_history
    AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION crontask_users_truncate_score_history();

CREATE FUNCTION crontask_users_keep_score_history_key() RETURNS trigger
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM score_history WHERE user_id = OLD.id) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'foreign_key_violation',
            MESSAGE = 'a user named by score_history cannot change its id';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER users_keep_score_history_key
    AFTER UPDATE OF id ON users
    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)
    EXECUTE FUNCTION crontask_users_keep_score_history_key();

ALTER TABLE score_history DROP CONSTRAINT score_history_user_id_fkey;
ALTER TABLE users SET (fillfactor = 90);
"""

DOWNGRADE = """
DROP TRIGGER users_keep_score_history_key ON users;
DROP TRIGGER users_truncate_score_history ON users;
DROP TRIGGER users_delete_score_history ON users;
DROP TRIGGER score_history_users_exist_on_update ON score_history;
DROP TRIGGER score_history_users_exist_on_insert ON score_history;
DROP FUNCTION crontask_users_keep_score_history_key();
DROP FUNCTION crontask_users_truncate_score_history();
DROP FUNCTION crontask_users_delete_score_history();
DROP FUNCTION crontask_score_history_users_exist();
ALTER TABLE users RESET (fillfactor);
ALTER TABLE score_history ADD CONSTRAINT score_history_user_id_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE NOT VALID;
"""

VALIDATE = "ALTER TABLE score_history VALIDATE CONSTRAINT score_history_user_id_fkey"


def upgrade() -> None:
    op.execute(LOCK_BRIEFLY)
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(LOCK_BRIEFLY)
    op.execute(DOWNGRADE)
    # Checks the existing rows under a SHARE UPDATE EXCLUSIVE lock: writes go on meanwhile.
    op.execute(VALIDATE)
