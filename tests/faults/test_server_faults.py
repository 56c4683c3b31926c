"""The server itself misbehaves: it restarts mid-run, runs out of connections, or ends a
decay halfway. Each test owns its server."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from faults_support import (
    Server,
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

from crontask_jobs.decay_rules import UserState, compute_decay
from tests.db.support import slow_history_inserts, stall_history_of

SMALL = "-c max_connections=8 -c superuser_reserved_connections=3"
"""Five connections for the `crontask` role; three reserved for the test's superuser."""


def fresh(server: Server) -> tuple[str, sa.Engine]:
    name = server.fresh_database()
    sql = server.admin(name)
    execute(sql, "CREATE TABLE processed_log (conversation_id uuid, execution_id uuid,"
                 " stage text)")
    execute(sql, "GRANT ALL ON processed_log TO crontask")
    return server.url(name), sql


def stopped_when(args: list[str], url: str, ready: Any, what: str,
                 signum: int = signal.SIGTERM) -> tuple[int, str, str]:
    """Run the CLI, send it `signum` once `ready()` holds, and wait for it (reaped however the
    test ends): its exit code, stdout and stderr."""
    proc = popen(args, url)
    try:
        wait_until(ready, what)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    return proc.returncode, out, err


def committing(sql: sa.Engine, application: str) -> Any:
    """How many of the application's sessions wait in a COMMIT: on a trigger's sleep (in a
    message that commits: a pipeline's final message goes on to the slot's next claim after
    its COMMIT), or on a synchronous standby."""
    return scalar(sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"
                       " AND (wait_event = 'SyncRep' OR wait_event = 'PgSleep'"
                       " AND query LIKE '%COMMIT%')", {"a": application})


def test_a_restart_mid_run_settles_every_claim(own_server: Server) -> None:
    url, sql = fresh(own_server)
    add_conversations(sql, 30, idle_minutes=30)
    proc = popen(["process", "--pipeline", "fault_pipelines:slow_sql", "--batch-size", "30",
                  "--max-concurrent-pipelines", "4"], url)
    try:
        wait_until(lambda: scalar(sql, "SELECT count(*) FROM conversations"
                                       " WHERE status = 'processed'") >= 4,
                   "the run to get going")
        sql.dispose()
        own_server.stop()  # a fast shutdown: every session is terminated mid-statement
        time.sleep(1)
        own_server.start()
        out, err = proc.communicate(timeout=90)
    finally:
        reap(proc)
    assert proc.returncode == 1, err
    report = report_of(out)
    assert report["status"] == "failed"
    assert report["reason"] in ("backend_terminated", "connection_lost", "database_unavailable")
    counts = report["counts"]
    assert counts["handed_back"] >= 1
    assert counts["processed"] + counts["failed"] + counts["lost"] + counts["handed_back"] == (
        counts["claimed"])
    assert counts["eligible"] == 30
    got = dict(rows(sql, "SELECT status, count(*) FROM conversations GROUP BY status"))
    assert got.get("processing", 0) == 0
    assert got.get("processed", 0) == counts["processed"]
    # Nothing was done twice, and what was cut short left no trace.
    assert scalar(sql, "SELECT count(*) FROM processed_log WHERE stage = 'after'") == (
        counts["processed"])
    assert scalar(sql, "SELECT count(DISTINCT conversation_id) FROM processed_log") == (
        counts["processed"])
    [execution] = rows(sql, "SELECT status, result FROM job_executions")
    assert execution.status == "failed"
    assert execution.result["counts"] == counts
    no_stranded_work(sql)
    sql.dispose()


@pytest.mark.parametrize("own_server", [SMALL], indirect=True)
def test_slots_that_cannot_connect_stop_and_the_others_do_the_batch(own_server: Server) -> None:
    url, sql = fresh(own_server)
    add_conversations(sql, 20, idle_minutes=30)
    proc = cli(["process", "--pipeline", "fault_pipelines:slow_sql", "--batch-size", "20",
                "--max-concurrent-pipelines", "10"], url, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = report_of(proc.stdout)
    assert report["status"] == "completed", (report, proc.stderr)
    assert report["status"] == "completed"
    assert report["counts"]["processed"] == 20, (report, proc.stderr)
    assert 1 <= report["counts"]["slots_failed"] <= 9  # some slots were refused...
    assert "too many clients" in proc.stderr or "reserved" in proc.stderr
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'processed'") == 20
    no_stranded_work(sql)
    sql.dispose()


@pytest.mark.parametrize("own_server", [SMALL], indirect=True)
def test_no_connection_at_all_is_exit_3_and_nothing_is_left_behind(own_server: Server) -> None:
    url, sql = fresh(own_server)
    add_conversations(sql, 3, idle_minutes=30)
    hogs = [sa.create_engine(own_server.url(own_server.template).replace(
        "postgresql://", "postgresql+psycopg://"), poolclass=sa.pool.NullPool)
        for _ in range(5)]
    held = [engine.connect() for engine in hogs]  # every slot the role may use
    try:
        proc = cli(["process"], url, timeout=60)
    finally:
        for conn in held:
            conn.close()
        for engine in hogs:
            engine.dispose()
    assert proc.returncode == 3, proc.stderr
    report = report_of(proc.stdout)
    assert (report["status"], report["reason"]) == ("failed", "database_unavailable")
    assert "too many clients" in report["error"] or "remaining connection slots" in (
        report["error"])
    assert scalar(sql, "SELECT count(*) FROM job_executions") == 0
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'active'") == 3
    sql.dispose()


def test_a_decay_cut_off_midway_is_finished_exactly_by_the_next_run(
        server: Server, database: str, url: str, sql: sa.Engine) -> None:
    users = rows(sql, """
        INSERT INTO users (chapter, relationship_score, last_interaction_at)
        SELECT 1, 90, now() - make_interval(hours => 10, secs => i)
          FROM generate_series(1, 12000) AS i
        RETURNING id, chapter, relationship_score, last_interaction_at""")
    # The 7,000th user to be decayed makes its chunk's INSERT sleep: chunks 1 (5,000 users)
    # commit, chunk 2 is in flight when its session is ended.
    target = sorted(users, key=lambda u: (u.last_interaction_at, u.id))[7000].id
    execute(sql, f"""
        CREATE FUNCTION stall() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.user_id = '{target}' THEN PERFORM pg_sleep(60); END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER stall AFTER INSERT ON score_history
            FOR EACH ROW EXECUTE FUNCTION stall();""")
    proc = popen(["decay"], url)
    try:
        pid = wait_until(lambda: scalar(sql, "SELECT pid FROM pg_stat_activity WHERE"
                                             " application_name = 'crontask-job decay'"
                                             " AND wait_event = 'PgSleep'"),
                         "the decay's second chunk to stall")
        assert scalar(sql, "SELECT pg_terminate_backend(:pid)", {"pid": pid})
        out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "backend_terminated")
    assert report["counts"]["users_decayed"] == 5000  # the committed chunk, and only it
    assert "the next run decays the rest" in report["error"]
    assert scalar(sql, "SELECT count(*) FROM score_history") == 5000
    execute(sql, "DROP TRIGGER stall ON score_history")
    rerun = cli(["decay"], url, timeout=120)  # a failed run does not count for the window
    again = report_of(rerun.stdout)
    # The 7,000 the first run did not reach, plus those of the first 5,000 whose carried
    # fraction of a cent became a whole one in the seconds between the runs.
    assert again["status"] == "completed"
    assert 7000 <= again["counts"]["users_decayed"] <= 12000
    per_user = dict(rows(sql, "SELECT user_id, count(*) AS n FROM score_history"
                              " GROUP BY user_id"))
    assert len(per_user) == 12000 and set(per_user.values()) <= {1, 2}
    at = scalar(sql, "SELECT result->>'decayed_at' FROM job_executions"
                     " WHERE status = 'completed'")
    now = datetime.fromisoformat(at)
    final = dict(rows(sql, "SELECT id, relationship_score FROM users"))
    for u in users:  # all of the time, charged once: to the cent, as one run would
        expected = compute_decay(UserState(u.chapter, u.relationship_score,
                                           u.last_interaction_at, None), now)
        assert expected is not None
        assert abs(final[u.id] - expected.score_after) <= Decimal("0.01")
    statuses = sorted(r[0] for r in rows(sql, "SELECT status FROM job_executions"))
    assert statuses == ["completed", "failed"]
    no_stranded_work(sql)


PARALLEL_USERS = """
INSERT INTO users (chapter, relationship_score, last_interaction_at)
SELECT 1 + i % 5, 90, now() - make_interval(hours => 100, secs => i % 900)
  FROM generate_series(1, 60000) AS i
RETURNING id, chapter, relationship_score, last_interaction_at"""
"""Above the 50,000 users from which decay walks them on more than one connection."""


def charged_once_to_the_cent(sql: sa.Engine, users: list[Any], now: datetime) -> None:
    """All of each user's time, charged once: to the cent, as one run at `now` would."""
    final = dict(rows(sql, "SELECT id, relationship_score FROM users"))
    for u in users:
        expected = compute_decay(UserState(u.chapter, u.relationship_score,
                                           u.last_interaction_at, None), now)
        assert expected is not None
        assert abs(final[u.id] - expected.score_after) <= Decimal("0.01")


def rerun_finishes_exactly(sql: sa.Engine, url: str, users: list[Any],
                           trigger: str) -> dict[str, Any]:
    """Drop the test's trigger, run decay again on two connections, and check that it decayed
    exactly the rest: every user has one or two history rows (the cut run's and this one's), and
    all of each user's time is charged once. The completed run's result."""
    execute(sql, f"DROP TRIGGER {trigger} ON score_history")
    rerun = cli(["decay", "--workers", "2"], url, timeout=120)
    again = report_of(rerun.stdout)
    assert again["status"] == "completed", rerun.stderr
    per_user = dict(rows(sql, "SELECT user_id, count(*) AS n FROM score_history"
                              " GROUP BY user_id"))
    assert len(per_user) == 60000 and set(per_user.values()) <= {1, 2}
    [result] = rows(sql, "SELECT result FROM job_executions WHERE status = 'completed'")
    charged_once_to_the_cent(sql, users, datetime.fromisoformat(result.result["decayed_at"]))
    return dict(result.result)


def test_a_parallel_decay_cut_off_midway_is_finished_exactly_by_the_next_run(
        server: Server, database: str, url: str, sql: sa.Engine) -> None:
    users = rows(sql, PARALLEL_USERS)
    execute(sql, "ANALYZE users")
    stall_history_of(sql, sorted(
        users, key=lambda u: (u.chapter, u.last_interaction_at, u.id))[30000].id)
    proc = popen(["decay", "--workers", "2"], url)
    try:
        pid = wait_until(lambda: scalar(sql, "SELECT pid FROM pg_stat_activity WHERE"
                                             " application_name = 'crontask-job decay'"
                                             " AND wait_event = 'PgSleep'"),
                         "one of the decay's chunks to stall")
        assert scalar(sql, "SELECT pg_terminate_backend(:pid)", {"pid": pid})
        out, err = proc.communicate(timeout=60)
    finally:
        reap(proc)
    assert proc.returncode == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "backend_terminated")
    # What the report counts is exactly what was committed: the other connection's chunks
    # included, the stalled chunk not.
    decayed = report["counts"]["users_decayed"]
    assert 0 < decayed < 60000
    assert scalar(sql, "SELECT count(*) FROM score_history") == decayed
    assert scalar(sql, "SELECT count(*) FROM users WHERE last_decayed_at IS NOT NULL") == decayed
    assert rerun_finishes_exactly(sql, url, users, "stall")["workers"] == 2
    no_stranded_work(sql)


@pytest.mark.parametrize("own_server", [SMALL], indirect=True)
def test_a_decay_connection_that_cannot_open_leaves_its_share_to_the_other(
        own_server: Server) -> None:
    url, sql = fresh(own_server)
    execute(sql, PARALLEL_USERS)
    execute(sql, "ANALYZE users")
    hogs = [sa.create_engine(own_server.url(own_server.template).replace(
        "postgresql://", "postgresql+psycopg://"), poolclass=sa.pool.NullPool)
        for _ in range(3)]
    # The server admits a non-superuser while fewer than five sessions of any role are open.
    # Open throughout: this test's one superuser session (it watches through it, opening no
    # other) and three held by the role; the run's first connection is the fifth, and every
    # other it tries is refused until all its users are decayed. Then the slots come back, and
    # the run's bookkeeping (retried while the server refuses it) records the outcome.
    with sql.connect() as watch:
        held = [engine.connect() for engine in hogs]
        proc = popen(["decay", "--workers", "2"], url)
        try:
            wait_until(lambda: watch.execute(sa.text(
                "SELECT count(*) FROM score_history")).scalar_one() == 60000,
                "the decay's last chunk", timeout=90)
        except BaseException:
            reap(proc)
            raise
        finally:
            for conn in held:
                conn.close()
            for engine in hogs:
                engine.dispose()
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        reap(proc)
    assert proc.returncode == 0, err
    report = report_of(out)
    assert report["status"] == "completed", (report, err)
    assert report["counts"]["users_decayed"] == 60000
    assert "a connection could not be opened" in err
    [result] = rows(sql, "SELECT result FROM job_executions WHERE status = 'completed'")
    assert result.result["workers"] == 1
    assert scalar(sql, "SELECT count(DISTINCT user_id) FROM score_history") == 60000
    assert scalar(sql, "SELECT count(*) FROM score_history") == 60000
    no_stranded_work(sql)
    sql.dispose()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_parallel_decay_stopped_by_its_pod_loses_nothing_and_counts_nothing_twice(
        server: Server, database: str, url: str, sql: sa.Engine, signum: int) -> None:
    """SIGTERM: activeDeadlineSeconds or a deleted pod; SIGKILL: the node or the OOM killer."""
    users = rows(sql, PARALLEL_USERS)
    execute(sql, "ANALYZE users")
    slow_history_inserts(sql, 0.5)
    code, out, err = stopped_when(
        ["decay", "--workers", "2"], url,
        lambda: scalar(sql, "SELECT count(*) FROM score_history") > 0, "the decay's first chunk",
        signum)
    wait_until(lambda: scalar(sql, "SELECT count(*) FROM pg_stat_activity"
                                   " WHERE application_name = 'crontask-job decay'") == 0,
               "the run's sessions to end")
    assert scalar(sql, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    committed = scalar(sql, "SELECT count(*) FROM score_history")
    assert 0 < committed < 60000
    assert scalar(sql, "SELECT count(*) FROM users WHERE last_decayed_at IS NOT NULL") == (
        committed)
    if signum == signal.SIGTERM:
        assert code == 1, err
        report = report_of(out)
        assert (report["status"], report["reason"]) == ("failed", "terminated")
        assert report["counts"]["users_decayed"] == committed  # what was committed, no more
        assert scalar(sql, "SELECT status FROM job_executions") == "failed"
        assert scalar(sql, "SELECT result->>'workers' FROM job_executions") == "2"
        no_stranded_work(sql)
    else:  # killed: its row stays running until recover's --abandoned-after
        assert code == -signal.SIGKILL
        assert scalar(sql, "SELECT status FROM job_executions") == "running"
    rerun_finishes_exactly(sql, url, users, "slow")


def test_a_sigterm_while_a_chunk_commits_waits_for_the_commit_and_counts_it(
        server: Server, database: str, url: str, sql: sa.Engine) -> None:
    """A COMMIT already sent may take effect whatever the client does next: the run learns its
    outcome before it stops, so what it reports is exactly what was committed."""
    users = rows(sql, PARALLEL_USERS)
    execute(sql, "ANALYZE users")
    target = sorted(users, key=lambda u: (u.chapter, u.last_interaction_at, u.id))[100].id
    execute(sql, f"""
        CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.user_id = '{target}' THEN PERFORM pg_sleep(2); END IF; RETURN NULL; END $$;
        CREATE CONSTRAINT TRIGGER late AFTER INSERT ON score_history
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION late();""")
    code, out, err = stopped_when(["decay", "--workers", "2"], url,
                                  lambda: committing(sql, "crontask-job decay"),
                                  "the target's chunk to be committing")
    assert code == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "terminated")
    assert scalar(sql, "SELECT count(*) FROM score_history WHERE user_id = :u",
                  {"u": target}) == 1  # the COMMIT in flight took, and was waited for
    assert report["counts"]["users_decayed"] == scalar(sql, "SELECT count(*) FROM score_history")
    no_stranded_work(sql)


NO_STANDBY = "-c synchronous_standby_names=nobody -c synchronous_commit=local"
"""A synchronous standby that never answers, waited for only by a transaction that asks
(`synchronous_commit` on): its COMMIT is durable here first, then waits. A cancel ends the
wait and the COMMIT stands, as PostgreSQL does when a standby is lost."""


def stall_commits(sql: sa.Engine, table: str, condition: str, how: str) -> None:
    """A transaction that updates a row of `table` matching `condition` (on NEW) stalls in its
    COMMIT: in a deferred constraint trigger's sleep, which a cancel aborts (the COMMIT fails),
    or (`sync_standby`) waiting for the standby after it is durable, which a cancel ends
    without undoing it."""
    if how == "deferred_trigger":
        execute(sql, f"""
            CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF {condition} THEN PERFORM pg_sleep(30); END IF; RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER late AFTER UPDATE ON {table}
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION late();""")
    else:
        execute(sql, f"""
            CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN IF {condition} THEN PERFORM set_config('synchronous_commit', 'on', true);
                  END IF; RETURN NULL; END $$;
            CREATE TRIGGER late AFTER UPDATE ON {table}
                FOR EACH ROW EXECUTE FUNCTION late();""")


@pytest.mark.parametrize("own_server", [NO_STANDBY], indirect=True)
@pytest.mark.parametrize("how", ["deferred_trigger", "sync_standby"])
def test_a_sigterm_on_recovers_commit_reports_what_the_database_kept(
        own_server: Server, how: str) -> None:
    """recover's one transaction is its whole run. A SIGTERM on its COMMIT may stop it (the
    cancel lands in a deferred trigger) or not (the COMMIT is durable and only waits for a
    standby): either way the report, the execution row and the conversations agree."""
    url, sql = fresh(own_server)
    stuck = add_conversations(sql, 30, status="processing", updated_minutes_ago=45)
    stall_commits(sql, "conversations", f"NEW.id = '{stuck[7]}'", how)
    code, out, err = stopped_when(["recover"], url,
                                  lambda: committing(sql, "crontask-job recover"),
                                  "recover to be committing")
    report = report_of(out)
    failed = scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'failed'")
    execution = scalar(sql, "SELECT status FROM job_executions WHERE id = :id",
                       {"id": report["execution_id"]})
    if how == "sync_standby":  # durable before the wait: the run did its work, and says so
        assert (code, report["status"]) == (0, "completed"), err
        assert (report["counts"]["recovered"], failed, execution) == (30, 30, "completed")
        assert "recovered 30 stuck conversation(s)" in err
    else:  # the cancel stopped the COMMIT: nothing recovered, and nothing named as recovered
        assert (code, report["status"], report["reason"]) == (1, "failed", "terminated"), err
        assert (failed, execution) == (0, "failed")
        assert "recovered 30" not in err
        execute(sql, "DROP TRIGGER late ON conversations")
        again = cli(["recover"], url, timeout=30)
        assert report_of(again.stdout)["counts"]["recovered"] == 30, again.stderr
    no_stranded_work(sql)
    sql.dispose()


@pytest.mark.parametrize("own_server", [NO_STANDBY], indirect=True)
@pytest.mark.parametrize("how", ["deferred_trigger", "sync_standby"])
def test_a_sigterm_on_a_conversations_final_commit_counts_it_as_the_database_kept_it(
        own_server: Server, how: str) -> None:
    """A pipeline's final message (the guarded update and its COMMIT) in flight when the run is
    told to stop: the cancel may stop the COMMIT or not. The report counts the conversation
    as what it became, never leaving it out."""
    url, sql = fresh(own_server)
    ids = add_conversations(sql, 3, idle_minutes=30)
    target = ids[1]
    stall_commits(sql, "conversations",
                  f"NEW.id = '{target}' AND NEW.status = 'processed'", how)
    code, out, err = stopped_when(["process", "--max-concurrent-pipelines", "1"], url,
                                  lambda: committing(sql, "crontask-job process"),
                                  "the target's final message to be committing")
    assert code == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "terminated")
    final = dict(rows(sql, "SELECT id, status FROM conversations"))
    counts = report["counts"]
    assert final[target] == ("processed" if how == "sync_standby" else "active")
    assert counts["processed"] == sum(s == "processed" for s in final.values()), (counts, final)
    assert counts["claimed"] == counts["processed"] + counts["handed_back"], counts
    assert (counts["handed_back"] + counts["deferred"]
            == sum(s == "active" for s in final.values())), (counts, final)
    [execution] = rows(sql, "SELECT status, result FROM job_executions")
    assert (execution.status, execution.result["counts"]) == ("failed", counts)
    no_stranded_work(sql)
    sql.dispose()


@pytest.mark.parametrize("own_server", [NO_STANDBY], indirect=True)
@pytest.mark.parametrize("how", ["deferred_trigger", "sync_standby"])
def test_a_sigterm_on_the_next_claims_commit_keeps_the_finished_conversation(
        own_server: Server, how: str) -> None:
    """A slot's next claim travels in the finished conversation's final message, after its
    COMMIT. When the run is told to stop while that claim's COMMIT is in flight, the finished
    conversation is counted as processed (the database kept it), and the next one is either
    never claimed (the cancel stopped its COMMIT) or handed back (the claim took): never left
    processing, never counted twice."""
    url, sql = fresh(own_server)
    first = add_conversations(sql, 1, idle_minutes=32)[0]
    target = add_conversations(sql, 1, idle_minutes=31)[0]  # claimed second: by the chain
    last = add_conversations(sql, 1, idle_minutes=30)[0]
    stall_commits(sql, "conversations",
                  f"NEW.id = '{target}' AND NEW.status = 'processing'", how)
    code, out, err = stopped_when(["process", "--max-concurrent-pipelines", "1"], url,
                                  lambda: committing(sql, "crontask-job process"),
                                  "the next claim's COMMIT, in the final message, to be waiting")
    assert code == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "terminated")
    final = dict(rows(sql, "SELECT id, status FROM conversations"))
    assert (final[first], final[target], final[last]) == ("processed", "active", "active")
    counts = report["counts"]
    assert counts["processed"] == 1, counts
    assert counts["claimed"] == counts["processed"] + counts["handed_back"], counts
    assert counts["handed_back"] == (1 if how == "sync_standby" else 0), counts
    assert counts["handed_back"] + counts["deferred"] == 2, counts
    [execution] = rows(sql, "SELECT status, result FROM job_executions")
    assert (execution.status, execution.result["counts"]) == ("failed", counts)
    no_stranded_work(sql)
    sql.dispose()


def test_a_sigterm_mid_recovery_rolls_it_back_and_the_next_run_takes_everything(
        url: str, sql: sa.Engine) -> None:
    stuck = add_conversations(sql, 30, status="processing", updated_minutes_ago=45)
    execute(sql, f"""
        CREATE FUNCTION late() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.id = '{stuck[7]}' THEN PERFORM pg_sleep(2); END IF; RETURN NULL; END $$;
        CREATE TRIGGER late AFTER UPDATE ON conversations FOR EACH ROW EXECUTE FUNCTION late();""")
    code, out, err = stopped_when(
        ["recover"], url,
        lambda: scalar(sql, "SELECT count(*) FROM pg_stat_activity WHERE application_name ="
                            " 'crontask-job recover' AND wait_event = 'PgSleep'"),
        "recover's UPDATE to be running")
    assert code == 1, err
    report = report_of(out)
    assert (report["status"], report["reason"]) == ("failed", "terminated")
    assert "recovered 30" not in err  # nothing is named as recovered that was rolled back
    wait_until(lambda: not scalar(sql, "SELECT count(*) FROM pg_stat_activity"
                                       " WHERE application_name = 'crontask-job recover'"),
               "the stopped run's sessions to end")
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'processing'") == 30
    assert scalar(sql, "SELECT status FROM job_executions WHERE id = :id",
                  {"id": report["execution_id"]}) == "failed"
    execute(sql, "DROP TRIGGER late ON conversations")
    again = cli(["recover"], url, timeout=30)
    assert report_of(again.stdout)["counts"]["recovered"] == 30, again.stderr
    assert scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'failed'") == 30
    no_stranded_work(sql)


def test_a_role_that_may_not_read_the_schema_revision_still_runs_and_says_so(
        server: Server, database: str, sql: sa.Engine) -> None:
    """A runtime role granted only the tables the jobs use: the schema check is skipped with
    a warning, not turned into a refusal of a deployment that worked before it existed."""
    execute(sql, "REVOKE ALL ON alembic_version FROM onechar")
    add_conversations(sql, 1, status="processing", updated_minutes_ago=45)
    proc = cli(["recover"], f"postgresql://onechar:a@127.0.0.1:{server.port}/{database}")
    assert proc.returncode == 0, proc.stderr
    assert report_of(proc.stdout)["counts"]["recovered"] == 1
    assert "the schema revision is not checked" in proc.stderr
