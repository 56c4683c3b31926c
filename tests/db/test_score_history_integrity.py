"""score_history.user_id without a row-by-row foreign key (migration 0003): the same guarantees.

Invariants: no statement can leave a history row naming a user that does not exist (insert,
change of user_id, change of a referenced user's id all fail with 23503 and write nothing);
deleting or truncating users removes their history; a writer's check holds the users it names
(KEY SHARE) until it commits, so they cannot be deleted under it. Decay's own inserts, exempt
from the check, name only users the same statement updated (tests/db/test_decay*.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from support import add_user, execute, rows, run_async, scalar

from crontask_jobs.tasks.decay import DecayOptions, run_decay

pytestmark = pytest.mark.db

INSERT_HISTORY = ("INSERT INTO score_history (user_id, score_before, score_after, reason)"
                  " VALUES (:u, 50, 49, 'test')")


def sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    return orig.sqlstate if isinstance(orig, psycopg.Error) else None


@contextmanager
def open_transaction(sql: sa.Engine) -> Iterator[sa.Connection]:
    """A second session whose transaction stays open for the block, then commits."""
    with sql.connect() as conn:
        conn.begin()
        yield conn
        conn.commit()


def test_history_of_an_unknown_user_is_refused(sql: sa.Engine) -> None:
    known = add_user(sql)
    execute(sql, INSERT_HISTORY, {"u": known})
    with pytest.raises(DBAPIError) as raised:
        execute(sql, "INSERT INTO score_history (user_id, score_before, score_after, reason)"
                     " VALUES (:a, 50, 49, 'test'), (:b, 50, 49, 'test')",
                {"a": known, "b": uuid.uuid4()})
    assert sqlstate(raised.value) == "23503"
    assert "1 of 2 user id(s)" in str(raised.value)
    assert scalar(sql, "SELECT count(*) FROM score_history") == 1  # the statement wrote nothing


def test_pointing_history_at_an_unknown_user_is_refused(sql: sa.Engine) -> None:
    execute(sql, INSERT_HISTORY, {"u": add_user(sql)})
    with pytest.raises(DBAPIError) as raised:
        execute(sql, "UPDATE score_history SET user_id = :u", {"u": uuid.uuid4()})
    assert sqlstate(raised.value) == "23503"


def test_the_exemption_is_for_inserts_only(sql: sa.Engine) -> None:
    execute(sql, INSERT_HISTORY, {"u": add_user(sql)})
    with sql.connect() as conn:
        conn.execute(sa.text("SET crontask.score_history_users_locked = on"))
        with pytest.raises(DBAPIError) as raised:
            conn.execute(sa.text("UPDATE score_history SET user_id = :u"), {"u": uuid.uuid4()})
    assert sqlstate(raised.value) == "23503"


def test_deleting_users_deletes_their_history_only(sql: sa.Engine) -> None:
    gone, kept = add_user(sql), add_user(sql)
    for uid in (gone, gone, kept):
        execute(sql, INSERT_HISTORY, {"u": uid})
    execute(sql, "DELETE FROM users WHERE id = :u", {"u": gone})
    assert [r.user_id for r in rows(sql, "SELECT user_id FROM score_history")] == [kept]


@pytest.mark.parametrize("statement", ["TRUNCATE users CASCADE",
                                       "TRUNCATE users, score_history CASCADE",
                                       "TRUNCATE score_history, users CASCADE"])
def test_truncating_users_truncates_history(sql: sa.Engine, statement: str) -> None:
    execute(sql, INSERT_HISTORY, {"u": add_user(sql)})
    execute(sql, statement)
    assert scalar(sql, "SELECT count(*) FROM score_history") == 0


def test_a_referenced_user_keeps_its_id(sql: sa.Engine) -> None:
    referenced, free = add_user(sql), add_user(sql)
    execute(sql, INSERT_HISTORY, {"u": referenced})
    with pytest.raises(DBAPIError) as raised:
        execute(sql, "UPDATE users SET id = gen_random_uuid() WHERE id = :u", {"u": referenced})
    assert sqlstate(raised.value) == "23503"
    execute(sql, "UPDATE users SET id = gen_random_uuid() WHERE id = :u", {"u": free})


def test_a_writers_check_holds_its_users_until_it_commits(sql: sa.Engine) -> None:
    uid = add_user(sql)
    with open_transaction(sql) as writer:
        writer.execute(sa.text(INSERT_HISTORY), {"u": uid})
        # What a DELETE of the user needs (FOR UPDATE) conflicts with the writer's KEY SHARE.
        with pytest.raises(DBAPIError) as raised:
            execute(sql, "SELECT 1 FROM users WHERE id = :u FOR UPDATE NOWAIT", {"u": uid})
        assert sqlstate(raised.value) == "55P03"
    execute(sql, "DELETE FROM users WHERE id = :u", {"u": uid})
    assert scalar(sql, "SELECT count(*) FROM score_history") == 0


def test_users_leave_room_for_hot_updates(sql: sa.Engine) -> None:
    options = scalar(sql, "SELECT reloptions FROM pg_class WHERE relname = 'users'")
    assert "fillfactor=90" in options


def test_a_held_user_sends_its_chunk_to_the_exact_scan(db_url: URL, sql: sa.Engine) -> None:
    users = [add_user(sql, chapter=1, score=50, inactive_hours=10) for _ in range(30)]
    with open_transaction(sql) as pipeline:  # a touch_user that has not committed yet
        pipeline.execute(sa.text("UPDATE users SET updated_at = now() WHERE id = :u"),
                         {"u": users[7]})
        report = run_async(db_url, lambda e: run_decay(e, DecayOptions(chunk_size=10)))
    assert report.counts["users_decayed"] == 29
    assert report.counts["skipped_locked"] == 1
    result = scalar(sql, "SELECT result FROM job_executions WHERE id = :id",
                    {"id": report.execution_id})
    assert result["exact_chunks"] >= 1
    assert result["longest_chunk_ms"] > 0
    history = {r.user_id for r in rows(sql, "SELECT user_id FROM score_history")}
    assert history == set(users) - {users[7]}
