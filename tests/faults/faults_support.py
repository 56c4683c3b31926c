"""The fault tier's own PostgreSQL servers, and helpers to run the CLI against them.

Each `Server` is a throwaway PostgreSQL 15 (hack/postgres.sh) that a test may stop, restart,
starve of connections or lock against. It has a login role `crontask` with a password (SCRAM
over TCP, as in production), owner of a migrated template database; `fresh_database()` copies
it for one test.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa

from crontask_jobs.dburl import parse_database_url
from crontask_jobs.migrate import upgrade

# the seed helpers the database tier uses; execute, rows and scalar are also the fault tests'
from tests.db.support import add_messages
from tests.db.support import execute as execute
from tests.db.support import rows as rows
from tests.db.support import scalar as scalar

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PASSWORD = "p@ss:w/rd?%&=é s3cr3t-" + uuid.uuid4().hex[:6]
"""The role's password: every character class a URL makes hard, and unique to this run."""


class Server:
    def __init__(self, name: str, options: str = "") -> None:
        self.workdir = tempfile.mkdtemp(prefix=f"crontask-faults-{name}-")
        os.chmod(self.workdir, 0o755)
        self.env = {**os.environ, "CRONTASK_PG_DIR": os.path.join(self.workdir, "pg"),
                    "CRONTASK_PG_OPTS": options}
        self.port = 0
        self.template = ""

    def _script(self, command: str) -> str:
        out = subprocess.run([str(REPO / "hack/postgres.sh"), command], env=self.env,
                             check=True, capture_output=True, text=True, timeout=120)
        return out.stdout.strip()

    def start(self) -> None:
        url = self._script("start").splitlines()[-1]
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])

    def stop(self) -> None:
        self._script("stop")

    def destroy(self) -> None:
        subprocess.run([str(REPO / "hack/postgres.sh"), "destroy"], env=self.env, check=False,
                       capture_output=True, timeout=120)
        shutil.rmtree(self.workdir, ignore_errors=True)

    def admin(self, database: str = "postgres") -> sa.Engine:
        """A superuser engine (trust over TCP) for arranging and asserting."""
        return sa.create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}",
            poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")

    def url(self, database: str, user: str = "crontask", password: str | None = PASSWORD) -> str:
        """A libpq URL, the password percent-encoded in the user-info."""
        auth = user if password is None else f"{user}:{quote(password, safe='')}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"

    def setup(self) -> None:
        """The `crontask` role (SCRAM password) and a migrated template it owns."""
        hba = Path(self.env["CRONTASK_PG_DIR"]) / "data" / "pg_hba.conf"
        rules = ("host all crontask 127.0.0.1/32 scram-sha-256\n"
                 "host all onechar 127.0.0.1/32 scram-sha-256\n")
        hba.write_text(rules + hba.read_text())
        admin = self.admin()
        with admin.connect() as c:
            c.execute(sa.text("SELECT pg_reload_conf()"))
            c.execute(sa.text("SET password_encryption = 'scram-sha-256'"))
            c.execute(sa.text("CREATE ROLE crontask LOGIN CREATEDB PASSWORD "
                              f"'{PASSWORD.replace(chr(39), chr(39) * 2)}'"))
            c.execute(sa.text("CREATE ROLE onechar LOGIN PASSWORD 'a'"))
            self.template = f"crontask_tpl_{uuid.uuid4().hex[:8]}"
            c.execute(sa.text(f'CREATE DATABASE "{self.template}" OWNER crontask'))
        admin.dispose()
        upgrade(parse_database_url(self.url(self.template)))

    def fresh_database(self) -> str:
        name = f"crontask_f_{uuid.uuid4().hex[:10]}"
        admin = self.admin()
        with admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{name}" OWNER crontask '
                              f'TEMPLATE "{self.template}"'))
            c.execute(sa.text(f'GRANT ALL ON DATABASE "{name}" TO onechar'))
        admin.dispose()
        with self.admin(name).connect() as c:
            c.execute(sa.text("GRANT ALL ON ALL TABLES IN SCHEMA public TO onechar"))
        return name

    def drop_database(self, name: str) -> None:
        admin = self.admin()
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def child_env(database_url: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CRONTASK_", "PG")) and k != "DATABASE_URL"}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    env["PYTHONPATH"] = str(HERE)
    env.update(extra or {})
    return env


def cli(args: Sequence[str], database_url: str | None, *, timeout: float = 90,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crontask_jobs", *args],
                          env=child_env(database_url, extra_env), capture_output=True,
                          text=True, timeout=timeout, check=False)


def popen(args: Sequence[str], database_url: str,
          extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "crontask_jobs", *args],
                            env=child_env(database_url, extra_env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def reap(proc: subprocess.Popen[str]) -> None:
    """However a test ends: a child left running (even a stopped one) is killed, and its pipes
    are read and closed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    if any(pipe is not None and not pipe.closed for pipe in (proc.stdout, proc.stderr)):
        proc.communicate(timeout=30)


def report_of(stdout: str) -> dict[str, Any]:
    value = json.loads(stdout.strip().splitlines()[-1])
    assert isinstance(value, dict)
    return value


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    """Poll until `condition()` is truthy; fail saying `what` never happened."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.05)


def add_conversations(engine: sa.Engine, n: int, *, status: str = "active",
                      idle_minutes: float = 60, updated_minutes_ago: float = 0,
                      messages: int = 2) -> list[uuid.UUID]:
    """n conversations, each of its own user, with `messages` messages each."""
    ids = [uuid.UUID(str(r[0])) for r in rows(engine, """
        WITH u AS (INSERT INTO users (last_interaction_at)
                   SELECT now() - interval '30 days' FROM generate_series(1, :n) RETURNING id)
        INSERT INTO conversations (user_id, status, last_message_at, updated_at)
        SELECT id, :status, now() - make_interval(secs => :idle),
               now() - make_interval(secs => :upd)
          FROM u
        RETURNING id""", {"n": n, "status": status, "idle": idle_minutes * 60,
                          "upd": updated_minutes_ago * 60})]
    add_messages(engine, ids, messages)
    return ids


@contextmanager
def holding(engine: sa.Engine, statement: str,
            params: dict[str, Any] | None = None) -> Iterator[sa.Connection]:
    """A second session that runs `statement` in a transaction it keeps open (holding whatever
    locks it took) until the block ends, then rolls back."""
    with engine.connect() as conn:
        conn.execute(sa.text("BEGIN"))
        conn.execute(sa.text(statement), params or {})
        try:
            yield conn
        finally:
            conn.execute(sa.text("ROLLBACK"))


def no_stranded_work(engine: sa.Engine) -> None:
    """What users care about after any fault: nothing left processing without a live owner
    (no session of its run is connected), and no run left `running`."""
    stuck = rows(engine, """
        SELECT c.id FROM conversations AS c
         WHERE c.status = 'processing'
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity
                            WHERE application_name LIKE 'crontask-job%'
                              AND datname = current_database())""")
    assert not stuck, f"conversations left processing without a live owner: {stuck}"
    running = rows(engine, "SELECT id, job_name FROM job_executions WHERE status = 'running'")
    assert not running, f"executions left running: {running}"
