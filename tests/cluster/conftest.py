"""Operator tests against a real API server (and, for runs, a real node).

They run only when asked: ``CRONTASK_E2E=1`` (set by hack/e2e.sh once it brought a test cluster
up) and a ``KUBECONFIG``; otherwise every test here is skipped with the reason. The operator
runs as a subprocess (``python -m crontask_operator``, the same entry point as the image),
watching only namespaces named ``crontask-cluster-*``: each test gets a fresh one, and an
operator installed by the e2e suite in its own namespace is never disturbed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from tests.kube import (
    ARTIFACTS,
    REPO,
    create_restricted_namespace,
    dump_namespace,
    kubectl,
    wait_for,
)

CRD_DIR = REPO / "charts" / "crontask" / "crds"
NAMESPACE_PREFIX = "crontask-cluster-"
JOBS_IMAGE = os.environ.get("CRONTASK_JOBS_IMAGE", "crontask-jobs:dev")


@pytest.fixture(scope="package")
def crd() -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/crontasks.crontask.dev")


@pytest.fixture(scope="package")
def operator(crd: None) -> Iterator[subprocess.Popen[bytes]]:
    """One operator for the package, stopped before the e2e suite installs its own."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log_path = ARTIFACTS / "cluster-operator.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "crontask_operator", "--namespaces", f"{NAMESPACE_PREFIX}*",
             "--metrics-port", "0", "--liveness", "", "--resync-interval", "2",
             "--log-format", "text", "--log-level", "DEBUG", "--job-image", JOBS_IMAGE,
             "--job-image-pull-policy", "Never"],
            stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode in (0, -15), f"operator exited {proc.returncode}: see {log_path}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, operator: subprocess.Popen[bytes]) -> Iterator[str]:
    """A fresh namespace per test, labelled restricted so admission checks the job pods too."""
    name = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    create_restricted_namespace(name)
    yield name
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        dump = dump_namespace(name)
        print(f"\ndiagnostics kept in {dump}; operator log in {ARTIFACTS}/cluster-operator.log")
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    assert operator.poll() is None, "the operator must not crash on anything a test did"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


__all__ = ["JOBS_IMAGE", "REPO", "wait_for"]
