"""Operator tests against a real API server (and, for runs, a real node).

They run only when asked: ``CRONTASK_E2E=1`` (set by hack/e2e.sh once it brought a test cluster
up) and a ``KUBECONFIG``; otherwise every test here is skipped with the reason.

The operator runs as a subprocess (``python -m crontask_operator``, the same entry point as the
image), cluster-wide, as a ServiceAccount bound to the ClusterRole the Helm chart renders: the
tests prove the chart's RBAC is enough (the API server's OwnerReferencesPermissionEnforcement
included), and ``test_zz_rbac_audit`` that it is no more than the operator uses. Each test gets
a fresh namespace labelled ``restricted``; the operator is stopped before the e2e suite installs
its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.kube import (
    ARTIFACTS,
    HELM,
    REPO,
    create_restricted_namespace,
    dump_namespace,
    kubectl,
    wait_for,
)

CRD_DIR = REPO / "charts" / "crontask" / "crds"
NAMESPACE_PREFIX = "crontask-cluster-"
SYSTEM_NAMESPACE = "crontask-cluster-system"
SERVICE_ACCOUNT = "crontask-operator"
OPERATOR_USER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:{SERVICE_ACCOUNT}"
JOBS_IMAGE = os.environ.get("CRONTASK_JOBS_IMAGE", "crontask-jobs:dev")


@pytest.fixture(scope="package")
def crd() -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_DIR))
    kubectl("wait", "--for=condition=Established", "--timeout=60s",
            "crd/crontasks.crontask.dev")


def chart_cluster_role() -> str:
    """The chart's ClusterRole and binding, for our ServiceAccount, as helm renders them."""
    if subprocess.run([HELM, "version"], capture_output=True, check=False).returncode != 0:
        pytest.skip("helm not built yet: run hack/tools.sh (the operator runs with the chart's"
                    " RBAC)")
    return subprocess.run(
        [HELM, "template", "crontask-cluster", str(REPO / "charts" / "crontask"),
         "-n", SYSTEM_NAMESPACE, "--set", f"serviceAccount.name={SERVICE_ACCOUNT}",
         "-s", "templates/clusterrole.yaml", "-s", "templates/clusterrolebinding.yaml",
         "-s", "templates/serviceaccount.yaml"],
        capture_output=True, text=True, check=True).stdout


def service_account_kubeconfig(path: Path) -> Path:
    """A kubeconfig for the operator's ServiceAccount (a bound token), next to the admin's."""
    admin = json.loads(kubectl("config", "view", "--raw", "--minify", "-o", "json").stdout)
    token = kubectl("create", "token", SERVICE_ACCOUNT, "-n", SYSTEM_NAMESPACE,
                    "--duration=4h").stdout.strip()
    cluster = admin["clusters"][0]
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "clusters": [cluster],
        "users": [{"name": SERVICE_ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": cluster["name"],
                                                      "user": SERVICE_ACCOUNT}}],
        "current-context": "operator"}))
    path.chmod(0o600)
    return path


class Operator:
    """The operator under test, as a subprocess that can be restarted."""

    def __init__(self, kubeconfig: Path, log_path: Path) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== start {self.starts} {time.strftime('%H:%M:%S')}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crontask_operator", "--metrics-port", "0",
                 "--liveness", "", "--log-format", "text", "--log-level", "DEBUG",
                 "--job-image", JOBS_IMAGE, "--job-image-pull-policy", "Never"],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                env={**os.environ, "KUBECONFIG": str(self.kubeconfig),
                     "POD_ID": f"cluster-tier-{self.starts}"})

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return int(self.proc.returncode)

    def restart(self) -> None:
        code = self.stop()
        assert code in (0, -15), f"operator exited {code}: see {self.log_path}"
        self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="package")
def operator(crd: None) -> Iterator[Operator]:
    """One operator for the package, cluster-wide, with the chart's RBAC."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    rbac = chart_cluster_role()
    kubectl("create", "namespace", SYSTEM_NAMESPACE, check=False)
    kubectl("apply", "-n", SYSTEM_NAMESPACE, "-f", "-", stdin=rbac)
    wait_for("the operator's ServiceAccount", lambda: kubectl(
        "get", "serviceaccount", SERVICE_ACCOUNT, "-n", SYSTEM_NAMESPACE,
        check=False).returncode == 0)
    kubeconfig = service_account_kubeconfig(ARTIFACTS / "operator.kubeconfig")
    op = Operator(kubeconfig, ARTIFACTS / "cluster-operator.log")
    op.start()
    try:
        yield op
    finally:
        code = op.stop()
        kubectl("delete", "-n", SYSTEM_NAMESPACE, "-f", "-", stdin=rbac, check=False)
        kubectl("delete", "namespace", SYSTEM_NAMESPACE, "--wait=false", check=False)
    assert code in (0, -15), f"operator exited {code}: see {op.log_path}"


@pytest.fixture
def namespace(request: pytest.FixtureRequest, operator: Operator) -> Iterator[str]:
    """A fresh namespace per test, labelled restricted so admission checks the job pods too."""
    name = f"{NAMESPACE_PREFIX}{uuid.uuid4().hex[:8]}"
    create_restricted_namespace(name)
    yield name
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        dump = dump_namespace(name)
        print(f"\ndiagnostics kept in {dump}; operator log in {operator.log_path}")
    kubectl("delete", "namespace", name, "--wait=false", check=False)
    assert operator.alive(), "the operator must not crash on anything a test did"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


__all__ = ["JOBS_IMAGE", "OPERATOR_USER", "REPO", "Operator", "wait_for"]
