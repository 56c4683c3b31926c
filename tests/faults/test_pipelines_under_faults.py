"""Pipelines frozen (SIGSTOP), killed (SIGKILL), cut off (pg_terminate_backend) and timed out
inside SQL: one conversation's fault never ends the run, strands the batch or leaves anything
processing without a live owner."""

from __future__ import annotations

import signal
import subprocess

import sqlalchemy as sa
from fault_pipelines import LOG_TABLE
from faults_support import (
    add_conversations,
    cli,
    execute,
    no_stranded_work,
    popen,
    reap,
    report_of,
    rows,
    scalar,
    wait_until,
)

FROZEN_TRANSACTIONS = ("SELECT pid FROM pg_stat_activity WHERE application_name = "
                       "'crontask-job process' AND datname = current_database()"
                       " AND state LIKE 'idle in transaction%'")


def create_log_table(sql: sa.Engine) -> None:
    execute(sql, LOG_TABLE)
    execute(sql, "GRANT ALL ON processed_log TO crontask")


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_a_frozen_pipeline_holds_one_row_and_recover_takes_everything_else(
        url: str, sql: sa.Engine) -> None:
    [frozen_id] = add_conversations(sql, 1, idle_minutes=30)
    others = add_conversations(sql, 4, status="processing", updated_minutes_ago=45)
    proc = popen(["process", "--pipeline", "fault_pipelines:frozen_holder"], url)
    try:
        # The stage has taken the conversation's row lock and works outside the database.
        wait_until(lambda: scalar(sql, "SELECT count(*) FROM pg_stat_activity WHERE"
                                       " application_name = 'crontask-job process' AND query"
                                       " LIKE 'UPDATE conversations SET summary = ''working''%'"
                                       " AND state = 'idle in transaction'"),
                   "the pipeline to lock its conversation and work outside the database")
        proc.send_signal(signal.SIGSTOP)
        execute(sql, "UPDATE conversations SET updated_at = now() - interval '1 hour'"
                     " WHERE id <> :id", {"id": frozen_id})
        wait_until(lambda: scalar(sql, "SELECT now() - updated_at > interval '1.5 seconds'"
                                       " FROM conversations WHERE id = :id", {"id": frozen_id}),
                   "the frozen conversation to be stuck for recover's --stale-after 1s")
        rec = cli(["recover", "--stale-after", "1s"], url, timeout=30)
        assert rec.returncode == 0, rec.stderr
        counts = report_of(rec.stdout)["counts"]
        assert (counts["recovered"], counts["skipped_locked"]) == (4, 1)
        assert {r.status for r in rows(sql, "SELECT status FROM conversations WHERE id = ANY("
                                            ":ids)", {"ids": others})} == {"failed"}
        # PostgreSQL itself ends the frozen session (idle in transaction past the longest
        # stage timeout + 10s), which releases the row; the next recover takes it.
        try:
            wait_until(lambda: not rows(sql, FROZEN_TRANSACTIONS),
                       "the server to end the frozen session", timeout=60)
        except AssertionError:
            raise AssertionError(rows(sql, "SELECT pid, state, now() - state_change, query"
                                           " FROM pg_stat_activity WHERE application_name"
                                           " LIKE 'crontask%'")) from None
        rec = cli(["recover", "--stale-after", "1s"], url, timeout=30)
        assert report_of(rec.stdout)["counts"]["recovered"] == 1
        proc.send_signal(signal.SIGCONT)
        code, out, err = finish(proc)
    finally:
        reap(proc)
    # The thawed run finds its session gone and the conversation taken over: it says so.
    assert code == 1, err
    report = report_of(out)
    # Whether the thawed driver reads the server's FATAL before the closed socket decides which
    # of the two it reports; both say the connection (not the work) failed.
    assert report["status"] == "failed"
    assert report["reason"] in ("backend_terminated", "connection_lost")
    if report["reason"] == "backend_terminated":
        assert "idle-in-transaction" in report["error"]
    assert report["counts"]["lost"] == 1
    assert scalar(sql, "SELECT status FROM conversations WHERE id = :id",
                  {"id": frozen_id}) == "failed"
    no_stranded_work(sql)


def test_a_terminated_backend_costs_one_conversation_not_the_run(url: str,
                                                                 sql: sa.Engine) -> None:
    create_log_table(sql)
    ids = add_conversations(sql, 6, idle_minutes=30)
    execute(sql, "UPDATE conversations SET summary = 'marked' WHERE id = :id", {"id": ids[0]})
    proc = popen(["process", "--pipeline", "fault_pipelines:terminable"], url)
    try:
        pid = wait_until(lambda: scalar(
            sql, "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pg_sleep(CASE%'"
                 " AND state = 'active' AND application_name = 'crontask-job process'"),
            "the marked conversation's stage to sleep in SQL")
        wait_until(lambda: scalar(sql, "SELECT count(*) FROM conversations"
                                       " WHERE status = 'processed'") == 5,
                   "the other conversations to finish")
        assert scalar(sql, "SELECT pg_terminate_backend(:pid)", {"pid": pid})
        code, out, err = finish(proc)
    finally:
        reap(proc)
    assert code == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "backend_terminated")
    assert report["counts"] == {"eligible": 6, "claimed": 6, "processed": 5, "failed": 0,
                                "deferred": 0, "lost": 0, "handed_back": 1}
    assert report["stage_errors"]["sleep"]["count"] == 1
    assert "terminating connection due to administrator command" in (
        report["stage_errors"]["sleep"]["last"])
    [back] = rows(sql, "SELECT status, failure_reason, claimed_by FROM conversations"
                       " WHERE id = :id", {"id": ids[0]})
    assert back.status == "active"  # handed back for the next run, with the reason
    assert "administrator command" in back.failure_reason
    # Its 'before' stage's write died with its transaction; the others' stand, once each.
    assert scalar(sql, "SELECT count(*) FROM processed_log WHERE conversation_id = :id",
                  {"id": ids[0]}) == 0
    assert scalar(sql, "SELECT count(*) FROM processed_log") == 10
    [execution] = rows(sql, "SELECT status, error, result FROM job_executions")
    assert execution.status == "failed"
    assert execution.result["counts"]["handed_back"] == 1
    no_stranded_work(sql)


def test_a_statement_timed_out_in_a_stage_is_only_a_stage_error(url: str,
                                                                sql: sa.Engine) -> None:
    create_log_table(sql)
    add_conversations(sql, 3, idle_minutes=30)
    proc = cli(["process", "--pipeline", "fault_pipelines:sql_timeout_noncritical"], url)
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc.stdout)
    assert report["status"] == "completed"
    assert (report["counts"]["processed"], report["counts"]["failed"]) == (3, 0)
    assert report["stage_errors"] == {"sleep": {"count": 3, "last": "timed out after 0.5s"}}
    # The stages before and after the timed-out one kept their writes.
    assert dict(rows(sql, "SELECT stage, count(*) FROM processed_log GROUP BY stage")) == {
        "before": 3, "after": 3}
    # The statement was cancelled on the server, not left running there.
    assert scalar(sql, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE"
                       " 'SELECT pg_sleep(30)%' AND state = 'active'") == 0
    no_stranded_work(sql)


def test_a_critical_stage_timed_out_in_sql_fails_only_its_conversation(
        url: str, sql: sa.Engine) -> None:
    create_log_table(sql)
    add_conversations(sql, 3, idle_minutes=30)
    proc = cli(["process", "--pipeline", "fault_pipelines:sql_timeout_critical"], url)
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc.stdout)
    assert (report["status"], report["counts"]["failed"]) == ("completed", 3)
    reasons = {r[0] for r in rows(sql, "SELECT failure_reason FROM conversations")}
    assert reasons == {"stage sleep: timed out after 0.5s"}
    assert scalar(sql, "SELECT count(*) FROM processed_log") == 0  # all rolled back
    no_stranded_work(sql)


def test_a_stage_that_ignores_the_cancel_loses_its_conversation_only(
        url: str, sql: sa.Engine) -> None:
    """The stage swallows the server's cancel and starts another long statement: it is then
    cancelled as a task, which (if that statement is running, as it normally is) costs the
    connection, and with it only this conversation. On a machine so loaded that the task is
    cancelled between its statements, the connection survives and the pipeline goes on: either
    way each conversation ends consistently and nothing is left processing."""
    create_log_table(sql)
    ids = add_conversations(sql, 2, idle_minutes=30)
    proc = cli(["process", "--pipeline", "fault_pipelines:stubborn_stage"], url, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc.stdout)
    assert report["status"] == "completed"
    assert report["counts"]["failed"] + report["counts"]["processed"] == 2
    assert report["stage_errors"]["stubborn"] == {"count": 2, "last": "timed out after 0.3s"}
    logged = dict(rows(sql, "SELECT conversation_id, count(*) FROM processed_log"
                            " GROUP BY conversation_id"))
    for row in rows(sql, "SELECT id, status, failure_reason FROM conversations"
                         " WHERE id = ANY(:ids)", {"ids": ids}):
        if row.status == "failed":  # its connection closed: nothing of it was kept
            assert row.failure_reason == ("stage stubborn: timed out after 0.3s (the stage did"
                                          " not stop, so its connection was closed)")
            assert row.id not in logged
        else:  # the stage error was only a stage error: before and after both kept
            assert (row.status, logged.get(row.id)) == ("processed", 2)
    no_stranded_work(sql)


def test_sigterm_settles_the_claims_and_closes_the_run(url: str, sql: sa.Engine) -> None:
    """What Kubernetes does at activeDeadlineSeconds or when the pod is deleted."""
    create_log_table(sql)
    add_conversations(sql, 3, idle_minutes=30)
    proc = popen(["process", "--pipeline", "fault_pipelines:long_work"], url)
    try:
        wait_until(lambda: scalar(sql, "SELECT count(*) FROM conversations"
                                       " WHERE status = 'processing'") == 3,
                   "the run to claim its conversations")
        proc.send_signal(signal.SIGTERM)
        code, out, err = finish(proc, timeout=30)
    finally:
        reap(proc)
    assert code == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "terminated")
    assert report["counts"]["handed_back"] == 3
    got = rows(sql, "SELECT status, failure_reason FROM conversations")
    assert {(r.status, r.failure_reason) for r in got} == {
        ("active", "handed back: the run was terminated while it worked on it")}
    assert scalar(sql, "SELECT count(*) FROM processed_log") == 0
    assert scalar(sql, "SELECT status FROM job_executions") == "failed"
    no_stranded_work(sql)

