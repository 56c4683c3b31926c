"""The baseline: the seed's original approach, written as it worked, for bench/run.py only.

- guard: check-then-insert (SELECT a recent execution; if none, INSERT one and go on);
- recover: SELECT the stuck conversations, then UPDATE them one by one;
- decay: load users into Python, compute each one's decay, UPDATE/INSERT row by row
  (the same arithmetic as ours, `compute_decay`, so only the execution strategy differs);
- process: claim everything eligible, then run the pipelines one after another.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from crontask_jobs.decay_rules import UserState, compute_decay


def guard_then_insert(conn: sa.Connection, job: str, window: timedelta) -> bool:
    recent = conn.execute(sa.text(
        "SELECT 1 FROM job_executions WHERE job_name = :j AND status IN ('completed','running')"
        " AND started_at > now() - :w LIMIT 1"), {"j": job, "w": window}).first()
    if recent:
        return False
    conn.execute(sa.text("INSERT INTO job_executions (job_name, status) VALUES (:j, 'running')"),
                 {"j": job})
    conn.commit()
    return True


def recover(conn: sa.Connection, stale: timedelta) -> int:
    stuck = conn.execute(sa.text("SELECT id FROM conversations WHERE status = 'processing'"
                                 " AND updated_at < now() - :s"), {"s": stale}).all()
    for (cid,) in stuck:
        conn.execute(sa.text("UPDATE conversations SET status = 'failed', failure_reason = 'stuck',"
                             " updated_at = now() WHERE id = :id"), {"id": cid})
    return len(stuck)


def decay(conn: sa.Connection, limit: int | None = None) -> int:
    now = conn.execute(sa.text("SELECT now()")).scalar_one()
    users = conn.execute(sa.text(
        "SELECT id, chapter, relationship_score, last_interaction_at, last_decayed_at,"
        " game_status FROM users ORDER BY id" + (" LIMIT :n" if limit else "")),
        {"n": limit}).all()
    changed = 0
    for u in users:
        out = compute_decay(UserState(u.chapter, u.relationship_score, u.last_interaction_at,
                                      u.last_decayed_at, u.game_status), now)
        if out is None:
            continue
        conn.execute(sa.text(
            "UPDATE users SET relationship_score = :s, last_decayed_at = :now,"
            " game_status = :g WHERE id = :id"),
            {"s": out.score_after, "now": now, "id": u.id,
             "g": "game_over" if out.game_over else u.game_status})
        conn.execute(sa.text(
            "INSERT INTO score_history (user_id, score_before, score_after, reason)"
            " VALUES (:id, :b, :a, 'decay')"),
            {"id": u.id, "b": u.relationship_score, "a": out.score_after})
        changed += 1
    return changed


def process(conn: sa.Connection, idle: timedelta, batch: int,
            stage: Callable[[], None]) -> int:
    claimed = conn.execute(sa.text(
        "UPDATE conversations SET status = 'processing', updated_at = now()"
        " WHERE id IN (SELECT id FROM conversations WHERE status = 'active'"
        " AND last_message_at < now() - :i LIMIT :b) RETURNING id"),
        {"i": idle, "b": batch}).all()
    conn.commit()
    for (cid,) in claimed:
        stage()
        conn.execute(sa.text("UPDATE conversations SET status = 'processed' WHERE id = :id"),
                     {"id": cid})
        conn.commit()
    return len(claimed)


def sleep_stage(seconds: float) -> Callable[[], None]:
    return lambda: time.sleep(seconds)
