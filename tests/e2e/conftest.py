"""The e2e suite: the Helm chart, the operator and real job pods on a real cluster.

It runs only when asked (`CRONTASK_E2E=1`, set by hack/e2e.sh after it brought a cluster up),
so that a developer's default kube context is never touched by accident. One release is
installed per session into a namespace labelled with the `restricted` Pod Security Standard, so
that admission itself proves the operator's and the job pods' security settings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.kube import (
    REPO,
    create_restricted_namespace,
    dump_namespace,
    get,
    helm,
    kubectl,
    wait_for,
)

CHART = REPO / "charts" / "crontask"
SEED_SQL = (REPO / "hack" / "demo-seed.sql").read_text()
RELEASE = "crontask"
DB_SECRET = "crontask-database"


@pytest.fixture(scope="session")
def namespace(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"crontask-e2e-{uuid.uuid4().hex[:6]}"
    create_restricted_namespace(name)
    yield name
    if request.session.testsfailed:
        # The operator runs in the cluster here: its log is the first thing to read.
        target = dump_namespace(name, {"operator.log": [
            "logs", "-n", name, "-l", "app.kubernetes.io/component=operator", "--tail=-1",
            "--all-containers", "--prefix"]})
        print(f"\ne2e diagnostics for namespace {name} kept in {target}")
        print((target / "operator.log").read_text()[-6000:])
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        pytest.fail("DATABASE_URL must name the PostgreSQL server the job pods use")
    return url


@pytest.fixture(scope="session")
def release(namespace: str, database_url: str) -> Iterator[str]:
    """The chart installed as a user would, with the locally built images."""
    kubectl("create", "secret", "generic", DB_SECRET, "-n", namespace,
            f"--from-literal=url={database_url}")
    operator_image = os.environ.get("CRONTASK_OPERATOR_IMAGE", "crontask-operator:dev")
    jobs_image = os.environ.get("CRONTASK_JOBS_IMAGE", "crontask-jobs:dev")
    helm("upgrade", "--install", RELEASE, str(CHART), "-n", namespace, "--wait",
         "--timeout", "180s", *image_values("operator", operator_image),
         *image_values("jobs", jobs_image),
         "--set", f"database.secretName={DB_SECRET}", "--set", "database.secretKey=url",
         "--set", f"watch.namespaces={{{namespace}}}")
    yield RELEASE
    # test_zz_uninstall checks that uninstalling leaves nothing; this is the safety net.
    helm("uninstall", RELEASE, "-n", namespace, "--wait", check=False)


def image_values(component: str, image: str) -> list[str]:
    repository, _, tag = image.rpartition(":")
    return ["--set", f"{component}.image.repository={repository}",
            "--set", f"{component}.image.tag={tag}",
            "--set", f"{component}.image.pullPolicy=Never"]


@pytest.fixture
def seeded(database_url: str, release: str) -> Iterator[psycopg.Connection[Any]]:
    """The demo data, fresh for each test, inserted with plain SQL as other tools would."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        wait_for("the chart's migrations to create the schema", lambda: _schema_ready(conn))
        conn.execute(SEED_SQL)  # type: ignore[call-overload]
        yield conn


def _schema_ready(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('public.job_executions') IS NOT NULL").fetchone()
    return bool(row and row[0])


def crontask(name: str, namespace: str) -> dict[str, Any]:
    obj = get("crontask", name, namespace)
    assert obj is not None, f"CronTask {name} not found"
    return obj


def run_now(cronjob: str, namespace: str) -> str:
    """Start a run immediately, the way an operator on call would."""
    job = f"{cronjob[:40]}-e2e-{uuid.uuid4().hex[:6]}"
    kubectl("create", "job", job, f"--from=cronjob/{cronjob}", "-n", namespace)
    return job


def wait_for_run(name: str, namespace: str, job: str, timeout: float = 180) -> dict[str, Any]:
    """The CronTask's lastRun once the operator has folded in the given Job."""
    def probe() -> dict[str, Any] | None:
        last = (crontask(name, namespace).get("status") or {}).get("lastRun") or {}
        return last if last.get("jobName") == job else None
    return wait_for(f"CronTask {name} to report Job {job}", probe, timeout=timeout)


