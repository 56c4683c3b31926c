"""recover (FR-001, seed T1.4): stuck conversations fail, others stay, the run is recorded."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL
from support import add_conversations, execute, rows, run_async, scalar

from crontask_contract.report import RunStatus
from crontask_jobs.tasks.recover import IDS_PER_LOG_LINE, RecoverOptions, run_recover

pytestmark = pytest.mark.db


def recover(url: URL, **kw: timedelta):  # type: ignore[no-untyped-def]
    return run_async(url, lambda e: run_recover(e, RecoverOptions(**kw)))


def test_stuck_conversation_is_recovered(db_url: URL, sql: sa.Engine) -> None:
    [stuck] = add_conversations(sql, 1, status="processing", updated_minutes_ago=31)
    report = recover(db_url)
    assert report.status is RunStatus.COMPLETED
    assert report.counts == {"stuck": 1, "recovered": 1, "skipped_locked": 0, "abandoned": 0}
    [row] = rows(sql, "SELECT status, failure_reason FROM conversations WHERE id = :id",
                 {"id": stuck})
    assert row.status == "failed"
    assert "stuck in processing for more than 30m" in row.failure_reason


def test_non_stuck_conversations_are_untouched(db_url: URL, sql: sa.Engine) -> None:
    fresh = add_conversations(sql, 2, status="processing", updated_minutes_ago=29)
    old_active = add_conversations(sql, 2, status="active", updated_minutes_ago=600)
    old_done = add_conversations(sql, 2, status="processed", updated_minutes_ago=600)
    before = rows(sql, "SELECT id, status, updated_at, failure_reason FROM conversations"
                       " ORDER BY id")
    report = recover(db_url)
    assert report.counts["recovered"] == 0
    after = rows(sql, "SELECT id, status, updated_at, failure_reason FROM conversations"
                      " ORDER BY id")
    assert after == before
    assert len(after) == len(fresh + old_active + old_done)


def test_job_execution_is_recorded(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 3, status="processing", updated_minutes_ago=45)
    report = recover(db_url)
    [row] = rows(sql, "SELECT id, job_name, status, completed_at, result FROM job_executions")
    assert str(row.id) == report.execution_id
    assert (row.job_name, row.status) == ("recover", "completed")
    assert row.completed_at is not None
    assert row.result["counts"]["recovered"] == 3
    assert row.result["status"] == "completed"
    assert len(row.result["recovered_ids"]) == 3


def test_stale_after_is_configurable(db_url: URL, sql: sa.Engine) -> None:
    add_conversations(sql, 1, status="processing", updated_minutes_ago=6)
    assert recover(db_url, stale_after=timedelta(minutes=10)).counts["recovered"] == 0
    assert recover(db_url, stale_after=timedelta(minutes=5)).counts["recovered"] == 1


def test_abandoned_executions_are_closed(db_url: URL, sql: sa.Engine) -> None:
    execute(sql, "INSERT INTO job_executions (job_name, status, started_at) VALUES"
                 " ('process', 'running', now() - interval '3 hours'),"
                 " ('decay', 'running', now() - interval '10 minutes')")
    report = recover(db_url)
    assert report.counts["abandoned"] == 1
    got = dict(rows(sql, "SELECT job_name, status FROM job_executions WHERE job_name <> 'recover'"))
    assert got == {"process": "failed", "decay": "running"}
    error = scalar(sql, "SELECT error FROM job_executions WHERE job_name = 'process'")
    assert error.startswith("abandoned")


def test_a_second_recover_finds_nothing_more(db_url: URL, sql: sa.Engine) -> None:
    """A recovered conversation is failed, no longer processing: recovery is not repeated."""
    [cid] = add_conversations(sql, 1, status="processing", updated_minutes_ago=40)
    recover(db_url)
    assert scalar(sql, "SELECT status FROM conversations WHERE id = :id", {"id": cid}) == "failed"
    assert recover(db_url).counts["recovered"] == 0


def test_the_log_names_every_recovered_conversation_once_under_its_claimant(
        db_url: URL, sql: sa.Engine, caplog: pytest.LogCaptureFixture) -> None:
    """The server groups what it recovered into the log's lines: by the execution that had
    claimed them (or none), at most IDS_PER_LOG_LINE to a line."""
    stuck = add_conversations(sql, 130, status="processing", updated_minutes_ago=45)
    owners = [uuid.uuid4(), uuid.uuid4(), None]
    claimant = {c: owners[i % 3] if i < 120 else owners[0] for i, c in enumerate(stuck)}
    for c, owner in claimant.items():
        execute(sql, "UPDATE conversations SET claimed_by = :o WHERE id = :id",
                {"o": owner, "id": c})
    with caplog.at_level(logging.INFO, logger="crontask_jobs"):
        report = recover(db_url)
    assert report.counts["recovered"] == 130
    lines = [r.getMessage() for r in caplog.records if "stuck conversation(s) claimed" in
             r.getMessage()]
    named: list[str] = []
    for line in lines:
        owner = line.split("claimed by execution ")[1].split(" ")[0]
        ids = line.split("): ", 1)[1].split(", ")
        assert len(ids) <= IDS_PER_LOG_LINE
        assert {str(claimant[uuid.UUID(i)]) for i in ids} == {owner}
        named += ids
    assert sorted(named) == sorted(str(c) for c in stuck)
    assert len(lines) == 4  # 50 of the first (2 lines), 40 of the second, 40 of none
    [result] = rows(sql, "SELECT result FROM job_executions")
    assert len(set(result.result["recovered_ids"])) == 100
    assert set(result.result["recovered_ids"]) <= set(named)
