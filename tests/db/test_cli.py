"""The crontask-job CLI as the CronJob runs it: a real subprocess against a real server."""

from __future__ import annotations

import json
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from support import add_conversations, add_user, cli, popen, rows, scalar

from crontask_contract.report import MAX_REPORT_BYTES, decode
from crontask_jobs.migrate import alembic_config, head_revision

pytestmark = pytest.mark.db


def last_line(out: str) -> dict[str, object]:
    value = json.loads(out.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def test_process_run_reports_on_stdout_and_file(libpq_url: str, sql: sa.Engine,
                                                 tmp_path: Path) -> None:
    add_conversations(sql, 3, idle_minutes=20, messages=2)
    add_conversations(sql, 1, idle_minutes=20, messages=0)
    report_file = tmp_path / "termination-log"
    proc = cli(["--report-file", str(report_file), "process", "--batch-size", "3"], libpq_url)
    assert proc.returncode == 0, proc.stderr
    stdout_report = last_line(proc.stdout)
    assert stdout_report["status"] == "completed"
    counts = stdout_report["counts"]
    assert isinstance(counts, dict)
    assert (counts["claimed"], counts["deferred"]) == (3, 1)
    file_report = decode(report_file.read_text())
    assert file_report.execution_id == stdout_report["execution_id"]
    assert len(report_file.read_bytes()) <= MAX_REPORT_BYTES
    for line in proc.stderr.strip().splitlines():  # logs are JSON lines on stderr
        json.loads(line)


def test_skip_exits_zero_with_reason(libpq_url: str, sql: sa.Engine) -> None:
    add_user(sql, inactive_hours=12)
    assert cli(["decay"], libpq_url).returncode == 0
    proc = cli(["decay"], libpq_url)
    assert proc.returncode == 0
    report = last_line(proc.stdout)
    assert (report["status"], report["reason"]) == ("skipped", "recent_execution")


def test_flags_from_environment(libpq_url: str, sql: sa.Engine) -> None:
    add_conversations(sql, 1, status="processing", updated_minutes_ago=6)
    proc = cli(["recover"], libpq_url, extra_env={"CRONTASK_STALE_AFTER": "5m"})
    assert last_line(proc.stdout)["counts"] == {"stuck": 1, "recovered": 1, "skipped_locked": 0,
                                                "abandoned": 0}
    proc = cli(["recover", "--stale-after", "1h"], libpq_url,
               extra_env={"CRONTASK_STALE_AFTER": "garbage"})  # the flag wins
    assert proc.returncode == 0, proc.stderr


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_database_down_is_a_clear_error_with_the_password_masked(tmp_path: Path) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex[:6]
    url = f"postgresql://crontask:{secret}@127.0.0.1:{_closed_port()}/crontask"
    report_file = tmp_path / "report"
    for task in ("recover", "decay", "process", "migrate"):
        proc = cli(["--log-format", "text", "--report-file", str(report_file), task], url)
        assert proc.returncode == 3, (task, proc.stdout, proc.stderr)
        assert secret not in proc.stdout + proc.stderr + report_file.read_text()
        report = last_line(proc.stdout)
        assert (report["status"], report["reason"]) == ("failed", "database_unavailable")
        assert "database unreachable at postgresql://crontask:***@127.0.0.1" in str(
            report["error"])
        assert "Traceback" not in proc.stderr


def test_unknown_database_is_exit_3_with_the_password_masked(server_url: sa.engine.URL) -> None:
    # The throwaway server trusts local connections, so the server refuses the database, not
    # the password: the same path (a connection-time OperationalError) as a failed login.
    url = server_url.set(username="postgres", password="wrong-one",
                         database="no_such_db_" + uuid.uuid4().hex[:6])
    proc = cli(["recover"], url.render_as_string(hide_password=False))
    assert proc.returncode == 3
    assert "wrong-one" not in proc.stdout + proc.stderr
    assert "does not exist" in str(last_line(proc.stdout)["error"])


@contextmanager
def empty_database(server_url: sa.engine.URL, prefix: str) -> Iterator[sa.engine.URL]:
    """A database with no schema at all, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server_url.set(drivername="postgresql+psycopg"),
                             isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server_url.set(database=name)
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migrate_twice_at_once_is_safe(server_url: sa.engine.URL) -> None:
    with empty_database(server_url, "crontask_mig") as db:
        url = db.render_as_string(hide_password=False)
        procs = [popen(["migrate"], url) for _ in range(3)]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], outs
        reasons = sorted(str(last_line(o[0]).get("reason")) for o in outs)
        assert reasons == ["None", "up_to_date", "up_to_date"]
        check = sa.create_engine(db.set(drivername="postgresql+psycopg"),
                                 poolclass=sa.pool.NullPool)
        assert scalar(check, "SELECT version_num FROM alembic_version") == head_revision()
        check.dispose()


def test_run_killed_midway_is_cleaned_up_by_the_next_recover(libpq_url: str,
                                                             sql: sa.Engine) -> None:
    ids = add_conversations(sql, 4, idle_minutes=20)
    proc = popen(["process", "--pipeline", "pipelines_for_tests:blocking"], libpq_url)
    try:
        deadline = time.monotonic() + 30
        while scalar(sql, "SELECT count(*) FROM conversations WHERE status = 'processing'") < 4:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never claimed its conversations"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    [running] = rows(sql, "SELECT id, status FROM job_executions WHERE job_name = 'process'")
    assert running.status == "running"
    time.sleep(1.2)
    rec = cli(["recover", "--stale-after", "1s", "--abandoned-after", "1"], libpq_url)
    assert rec.returncode == 0, rec.stderr
    assert last_line(rec.stdout)["counts"] == {"stuck": 4, "recovered": 4, "skipped_locked": 0,
                                               "abandoned": 1}
    got = rows(sql, "SELECT id, status, claimed_by FROM conversations")
    assert {r.id for r in got} == set(ids)
    assert {r.status for r in got} == {"failed"}
    assert {r.claimed_by for r in got} == {running.id}
    [closed] = rows(sql, "SELECT status, completed_at, error FROM job_executions"
                         " WHERE id = :id", {"id": running.id})
    assert closed.status == "failed"
    assert closed.completed_at is not None
    assert closed.error.startswith("abandoned")


def test_schema_matches_the_models(sql: sa.Engine) -> None:
    from crontask_jobs.models import metadata

    inspector = sa.inspect(sql)
    for table in metadata.sorted_tables:
        db_cols = {c["name"] for c in inspector.get_columns(table.name)}
        assert db_cols == {c.name for c in table.columns}, table.name


def _refused(proc: Any, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    report = last_line(proc.stdout)
    assert (report["status"], report["reason"]) == ("failed", "schema_behind"), report
    for word in (*words, "crontask-job migrate"):
        assert word in str(report["error"]), report


def test_a_database_never_migrated_is_refused_before_anything_is_written(
        server_url: sa.engine.URL) -> None:
    with empty_database(server_url, "crontask_empty") as url:
        for task in ("recover", "decay", "process"):
            _refused(cli([task], url.render_as_string(hide_password=False)), "never migrated")
        check = sa.create_engine(url.set(drivername="postgresql+psycopg"),
                                 poolclass=sa.pool.NullPool)
        assert scalar(check, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
        check.dispose()


def test_a_schema_behind_this_release_is_refused_until_it_is_migrated(
        libpq_url: str, sql: sa.Engine) -> None:
    """The chart's migration hook skipped or failed, an old backup restored: the run fails
    first, writing nothing, and says what to do; once migrated, the same run works."""
    with sql.connect() as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003")
        conn.commit()
    add_conversations(sql, 2, idle_minutes=20, messages=1)
    add_conversations(sql, 1, status="processing", updated_minutes_ago=45)
    before = rows(sql, "SELECT id, status, updated_at FROM conversations ORDER BY id")
    for task in ("recover", "decay", "process"):
        _refused(cli([task], libpq_url), "revision 0003", head_revision())
    assert rows(sql, "SELECT id, status, updated_at FROM conversations ORDER BY id") == before
    assert scalar(sql, "SELECT count(*) FROM job_executions") == 0
    assert cli(["migrate"], libpq_url).returncode == 0
    proc = cli(["process"], libpq_url)
    assert proc.returncode == 0, proc.stderr
    counts = last_line(proc.stdout)["counts"]
    assert isinstance(counts, dict) and counts["processed"] == 2


def test_a_schema_a_newer_release_migrated_still_runs(libpq_url: str, sql: sa.Engine) -> None:
    """Migrations only add: during a rolling upgrade the previous release's pods run against
    the newer schema."""
    with sql.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0042'"))
    add_conversations(sql, 1, status="processing", updated_minutes_ago=45)
    proc = cli(["recover"], libpq_url)
    assert proc.returncode == 0, proc.stderr
    counts = last_line(proc.stdout)["counts"]
    assert isinstance(counts, dict) and counts["recovered"] == 1
