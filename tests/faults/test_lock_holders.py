"""Another session holds rows (or a whole table) while a job runs: no job waits without bound.

A lock holder here is a plain second session that keeps its transaction open across the run:
if a job waited for it, the run would never end and the subprocess timeout would fail the test.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import sqlalchemy as sa
from faults_support import (
    add_conversations,
    cli,
    holding,
    no_stranded_work,
    report_of,
    rows,
    scalar,
)

from crontask_jobs.decay_rules import UserState, compute_decay


def test_recover_skips_what_a_live_session_holds_and_recovers_the_rest(
        url: str, sql: sa.Engine) -> None:
    held = add_conversations(sql, 2, status="processing", updated_minutes_ago=45)
    free = add_conversations(sql, 5, status="processing", updated_minutes_ago=45)
    with holding(sql, "SELECT 1 FROM conversations WHERE id = ANY(:ids) FOR UPDATE",
                 {"ids": held}):
        proc = cli(["recover"], url, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert report_of(proc.stdout)["counts"] == {"stuck": 7, "recovered": 5, "skipped_locked": 2,
                                                "abandoned": 0}
    got = dict(rows(sql, "SELECT id, status FROM conversations"))
    assert {got[c] for c in free} == {"failed"}
    assert {got[c] for c in held} == {"processing"}
    again = cli(["recover"], url, timeout=30)  # the lock is gone: the next run takes them
    assert report_of(again.stdout)["counts"]["recovered"] == 2
    no_stranded_work(sql)


def seed_users(sql: sa.Engine, n: int) -> list[tuple[object, UserState]]:
    got = rows(sql, """
        INSERT INTO users (chapter, relationship_score, last_interaction_at)
        SELECT 1 + i % 5, 80, now() - make_interval(hours => 100 + i)
          FROM generate_series(1, :n) AS i
        RETURNING id, chapter, relationship_score, last_interaction_at, last_decayed_at""",
                   {"n": n})
    return [(r.id, UserState(r.chapter, r.relationship_score, r.last_interaction_at,
                             r.last_decayed_at)) for r in got]


def decayed_at(sql: sa.Engine, execution_id: str) -> datetime:
    result = scalar(sql, "SELECT result FROM job_executions WHERE id = :id",
                    {"id": execution_id})
    return datetime.fromisoformat(result["decayed_at"])


def test_decay_skips_users_a_pipeline_holds_and_the_next_run_charges_them_exactly(
        url: str, sql: sa.Engine) -> None:
    users = seed_users(sql, 40)
    held = [uid for uid, _ in users[:3]]
    # A touch_user stage that has not committed yet.
    with holding(sql, "UPDATE users SET updated_at = updated_at WHERE id = ANY(:ids)",
                 {"ids": held}):
        first = cli(["decay"], url, timeout=30)
    assert first.returncode == 0, first.stderr
    report = report_of(first.stdout)
    assert report["counts"]["users_decayed"] == 37
    assert report["counts"]["skipped_locked"] == 3
    second = cli(["decay", "--window", "1ms"], url, timeout=30)
    again = report_of(second.stdout)
    assert (again["status"], again["counts"]["users_decayed"]) == ("completed", 3)
    at = decayed_at(sql, again["execution_id"])
    scores = dict(rows(sql, "SELECT id, relationship_score FROM users"))
    for uid, before in users:
        if uid in held:  # all of their elapsed time, charged once, by the second run
            expected = compute_decay(before, at)
            assert expected is not None
            assert scores[uid] == expected.score_after
    per_user = rows(sql, "SELECT user_id, count(*) AS n FROM score_history GROUP BY user_id")
    assert {r.n for r in per_user} == {1} and len(per_user) == 40  # no user decayed twice
    no_stranded_work(sql)


def test_decay_behind_a_table_lock_fails_with_lock_timeout(url: str, sql: sa.Engine) -> None:
    seed_users(sql, 5)
    with holding(sql, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE"):  # a migration
        proc = cli(["decay"], url, timeout=60)
    assert proc.returncode == 1, proc.stderr
    report = report_of(proc.stdout)
    assert (report["status"], report["reason"]) == ("failed", "lock_timeout")
    assert "canceling statement due to lock timeout" in report["error"]
    assert "SELECT" not in report["error"] and "WITH" not in report["error"]
    [row] = rows(sql, "SELECT status, error, result FROM job_executions")
    assert row.status == "failed"
    assert row.result["reason"] == "lock_timeout"
    assert "lock timeout" in row.error
    no_stranded_work(sql)


def test_a_stage_waiting_on_a_lock_times_out_on_the_server_and_the_pipeline_goes_on(
        url: str, sql: sa.Engine) -> None:
    [cid] = add_conversations(sql, 1, idle_minutes=30, messages=3)
    user = scalar(sql, "SELECT user_id FROM conversations WHERE id = :id", {"id": cid})
    # Another pipeline's touch_user of the same user, not committed yet.
    with holding(sql, "UPDATE users SET updated_at = now() WHERE id = :u", {"u": user}):
        proc = cli(["process", "--stage-timeout", "touch_user=1s"], url, timeout=60)
        waiting = scalar(sql, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type ="
                              " 'Lock' AND application_name LIKE 'crontask-job%'")
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc.stdout)
    assert report["counts"]["processed"] == 1, (report, proc.stderr)
    assert report["stage_errors"] == {"touch_user": {"count": 1,
                                                     "last": "timed out after 1s"}}
    assert waiting == 0  # the statement was cancelled on the server, not abandoned there
    [conv] = rows(sql, "SELECT status, summary, message_count FROM conversations")
    assert (conv.status, conv.message_count) == ("processed", 3)  # later stages' writes kept
    assert conv.summary.startswith("3 messages")
    stored = scalar(sql, "SELECT result FROM job_executions")
    assert stored["stage_errors"] == report["stage_errors"]  # one shape in both
    no_stranded_work(sql)


def test_scores_are_whole_cents(sql: sa.Engine) -> None:
    """Guards the fixture data the decay tests compare against (numeric(5,2))."""
    seed_users(sql, 2)
    assert {r[0] for r in rows(sql, "SELECT relationship_score FROM users")} == {Decimal(80)}


def test_process_claims_around_a_conversation_someone_holds(url: str, sql: sa.Engine) -> None:
    ids = add_conversations(sql, 4, idle_minutes=30)
    with holding(sql, "SELECT 1 FROM conversations WHERE id = :id FOR UPDATE", {"id": ids[0]}):
        proc = cli(["process"], url, timeout=60)
    assert proc.returncode == 0, proc.stderr
    counts = report_of(proc.stdout)["counts"]
    assert (counts["claimed"], counts["processed"], counts["deferred"]) == (3, 3, 1)
    assert scalar(sql, "SELECT status FROM conversations WHERE id = :id",
                  {"id": ids[0]}) == "active"
    no_stranded_work(sql)
