"""What the bench measures on: users and their conversations, in the shapes the jobs meet."""

from __future__ import annotations

import dbs
import sqlalchemy as sa
from sqlalchemy.engine import URL

# Every user is past their chapter's grace (80-129 h without an interaction) and has never
# been decayed: decay charges all of them, most up to the per-run cap. One conversation per
# user: 1% stuck in processing for 2 h (recover's work), 1% processing but fresh, 98%
# processed long ago (the bulk the partial indexes must not see).
USERS = """
INSERT INTO users (chapter, relationship_score, last_interaction_at)
SELECT 1 + i % 5, 20 + (i % 80), now() - make_interval(hours => 80 + i % 50)
  FROM generate_series(1, :n) AS i
"""
CONVERSATIONS = """
INSERT INTO conversations (user_id, status, last_message_at, updated_at)
SELECT id,
       CASE WHEN rn % 100 IN (0, 1) THEN 'processing' ELSE 'processed' END,
       now() - interval '3 hours',
       CASE WHEN rn % 100 = 0 THEN now() - interval '2 hours' ELSE now() - interval '1 minute' END
  FROM (SELECT id, row_number() OVER () AS rn FROM users) AS u
"""


def seed_size(db: URL, rows: int) -> None:
    e = dbs.engine(db)
    with e.begin() as c:
        c.execute(sa.text(USERS), {"n": rows})
        c.execute(sa.text(CONVERSATIONS))
    with e.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE"))
    e.dispose()


# Idle conversations for process, each with `messages` messages of a few sentences (what
# load_transcript reads and summarise works through), their users recently active.
IDLE = """
WITH u AS (
    INSERT INTO users (chapter, relationship_score, last_interaction_at)
    SELECT 1 + i % 5, 60, now() - interval '2 hours' FROM generate_series(1, :n) AS i
    RETURNING id
)
INSERT INTO conversations (user_id, status, last_message_at)
SELECT id, 'active', now() - interval '1 hour' FROM u
"""
MESSAGES = """
INSERT INTO messages (conversation_id, role, content, created_at)
SELECT c.id, CASE WHEN m % 2 = 0 THEN 'user' ELSE 'assistant' END,
       'Message ' || m || ': ' || repeat('we talked about gardens, weather and the long '
                                         || 'journey home from the station ', 1 + m % 3),
       now() - interval '2 hours' + make_interval(secs => m)
  FROM conversations AS c CROSS JOIN generate_series(1, :m) AS m
 WHERE c.status = 'active'
"""


def seed_idle(db: URL, conversations: int, messages: int) -> None:
    e = dbs.engine(db)
    with e.begin() as c:
        c.execute(sa.text(IDLE), {"n": conversations})
        if messages:
            c.execute(sa.text(MESSAGES), {"m": messages})
    with e.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(sa.text("VACUUM ANALYZE"))
    e.dispose()
