"""The chaos tier: the Helm chart's operator, two replicas with leader election, hundreds of
CronTasks and real job pods, while the tests kill, freeze and restart things.

One release per module, watching two namespaces of CronTasks; the tests run in file order on
that shared world and each ends with the same convergence check (``World.converge``): every
CronTask has exactly one CronJob (none duplicated, none orphaned) in sync with its spec, the
refused ones are refused and have none, every run that finished (our own watch on the Jobs is
the ground truth, deleted Jobs included) is counted exactly once and no run is missing, and no
condition is stuck. The time each disruption took to converge is printed and kept in
``.artifacts/e2e/chaos.json``.

Killing and freezing a process (SIGKILL, SIGSTOP) needs the node's processes on this machine,
restarting kube-apiserver or etcd needs ``hack/cluster/cluster.sh restart``, and proving that one
replica acts at a time reads the API server's audit log: the tier runs on the local backend only
(``hack/e2e.sh`` adds it there) and is skipped, with that reason, anywhere else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.kube import (
    ARTIFACTS,
    REPO,
    container_pid,
    create_restricted_namespace,
    dump_namespace,
    helm,
    kubectl,
    kubectl_json,
    wait_for,
)
from tests.watching import Watches, finished, owned_by, ready

RELEASE = "chaos"
FULLNAME = "chaos-crontask"
LEASE = f"{FULLNAME}-operator"
GOOD, BAD = "crontask-database", "crontask-database-unreachable"
UNREACHABLE = "postgresql://nobody:nothing@127.0.0.1:9/none"
CRONTASKS_PER_NAMESPACE = 100
RUNNERS = ("run-good-1", "run-good-2", "run-bad-1")
"""Suspended CronTasks whose runs the tests start by hand (recover: fast and real)."""
SCHEDULED = ("tick",)
"""A CronTask the CronJob controller runs every minute, through every disruption."""
REFUSED = ("never-1", "never-2")
"""Schedules that never fire (30 February): refused, no CronJob."""
NEVER = "0 0 30 2 *"
TASKS = ("recover", "decay", "process")


LOCAL_ONLY = ("the chaos tier kills, freezes and restarts processes of the cluster on this"
              " machine: the local backend only (CRONTASK_E2E_BACKEND=local, through"
              " hack/e2e.sh or hack/cluster/cluster.sh exec)")


def local_backend() -> bool:
    """The local backend, run where its processes and audit log are (cluster.sh exec)."""
    return os.environ.get("CRONTASK_E2E_BACKEND", "local") == "local" and bool(
        os.environ.get("CRONTASK_AUDIT_LOG"))


def crontask_manifest(name: str, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"task": TASKS[index % 3], "schedule": f"{index % 60} * * * *",
                            "suspend": True, "database": {"secretKeyRef": {"name": GOOD}}}
    if name in RUNNERS or name in SCHEDULED:
        spec.update(task="recover", successfulJobsHistoryLimit=10, failedJobsHistoryLimit=10,
                    ttlSecondsAfterFinished=3600,
                    database={"secretKeyRef": {"name": BAD if "bad" in name else GOOD}})
    if name in SCHEDULED:
        spec.update(schedule="* * * * *", suspend=False)
    if name in REFUSED:
        spec["schedule"] = NEVER
    return {"apiVersion": "crontask.dev/v1alpha1", "kind": "CronTask",
            "metadata": {"name": name}, "spec": spec}


@dataclass
class Ledger:
    """Every Job of ours the cluster ever showed, and whether it finished: the ground truth the
    operator's counters are checked against (a Job deleted after it finished still counts)."""

    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_job(self, kind: str, obj: dict[str, Any], at: float) -> None:
        meta = obj["metadata"]
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("controller")]
        with self.lock:
            entry = self.jobs.setdefault(meta["uid"], {
                "name": meta["name"], "namespace": meta["namespace"],
                "crontask": (meta.get("labels") or {}).get("crontask.dev/crontask"),
                "run": bool(refs) and refs[0].get("kind") == "CronJob" and refs[0].get(
                    "name") == (meta.get("labels") or {}).get("crontask.dev/crontask"),
                "finished": None, "deleted": False})
            entry["finished"] = entry["finished"] or finished(obj)
            entry["deleted"] = entry["deleted"] or kind == "DELETED"

    def runs(self, namespace: str, crontask: str) -> dict[str, int]:
        with self.lock:
            out = {"Complete": 0, "Failed": 0}
            for job in self.jobs.values():
                if (job["namespace"], job["crontask"]) == (namespace, crontask) \
                        and job["run"] and job["finished"]:
                    out[job["finished"]] += 1
            return out

    def state(self, name: str) -> dict[str, Any] | None:
        with self.lock:
            return next((dict(j) for j in self.jobs.values() if j["name"] == name), None)


@dataclass
class World:
    system: str
    namespaces: tuple[str, str]
    ledger: Ledger
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    created_jobs: list[tuple[str, str]] = field(default_factory=list)

    # -- the operator replicas ---------------------------------------------------------------
    def lease(self) -> dict[str, Any]:
        spec: dict[str, Any] = kubectl_json("get", "lease", LEASE, "-n", self.system)["spec"]
        return spec

    def holder(self) -> str:
        """The process holding the Lease: its pod's name and a suffix of its own ('' when
        none). A killed container restarts in the same pod under a new identity."""
        return str(self.lease().get("holderIdentity") or "")

    def leader(self) -> str:
        """The pod holding the Lease ('' when none)."""
        return self.holder().rsplit("_", 1)[0]

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = kubectl_json(
            "get", "pods", "-n", self.system, "-l",
            "app.kubernetes.io/component=operator")["items"]
        return items

    def pid(self, pod: str) -> int:
        pid = container_pid(self.system, pod, "operator")
        assert pid is not None, f"the operator's process in pod {pod} (the kubelet's cgroupfs)"
        return pid

    def restarts(self, pod: str) -> int:
        for item in self.pods():
            if item["metadata"]["name"] == pod:
                return sum(int(s.get("restartCount", 0))
                           for s in item["status"].get("containerStatuses") or [])
        return -1

    # -- runs ----------------------------------------------------------------------------------
    def start_run(self, namespace: str, crontask: str) -> str:
        job = f"{crontask}-{uuid.uuid4().hex[:6]}"
        kubectl("create", "job", job, f"--from=cronjob/{crontask}", "-n", namespace)
        self.created_jobs.append((namespace, job))
        return job

    def wait_finished(self, jobs: list[str], timeout: float = 180) -> None:
        wait_for(f"jobs {jobs} to finish", lambda: all(
            (s := self.ledger.state(j)) is not None and s["finished"] for j in jobs) or None,
            timeout=timeout)

    # -- convergence -----------------------------------------------------------------------------
    def problems(self) -> list[str]:
        """Everything that is not as it must be, now (empty: converged)."""
        out: list[str] = []
        crontasks, cronjobs = {}, []
        for ns in self.namespaces:
            for obj in kubectl_json("get", "crontasks", "-n", ns)["items"]:
                crontasks[(ns, obj["metadata"]["name"])] = obj
            cronjobs += kubectl_json("get", "cronjobs", "-n", ns, "-l",
                                     "crontask.dev/crontask")["items"]
        owners: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for cj in cronjobs:
            meta = cj["metadata"]
            key = (meta["namespace"], meta["labels"]["crontask.dev/crontask"])
            owners.setdefault(key, []).append(cj)
            ct = crontasks.get(key)
            if ct is None or owned_by(cj) != ct["metadata"]["uid"] \
                    or meta["name"] != key[1]:
                out.append(f"orphaned CronJob {meta['namespace']}/{meta['name']}")
        for key, ct in sorted(crontasks.items()):
            name = f"{key[0]}/{key[1]}"
            status = ct.get("status") or {}
            mine = owners.get(key, [])
            if len(mine) > 1:
                out.append(f"{name}: {len(mine)} CronJobs")
            if status.get("observedGeneration") != ct["metadata"]["generation"]:
                out.append(f"{name}: generation {ct['metadata']['generation']} not observed")
            if key[1] in REFUSED:
                cond = next((c for c in status.get("conditions") or []
                             if c["type"] == "Ready"), {})
                if (cond.get("status"), cond.get("reason")) != ("False", "InvalidSchedule"):
                    out.append(f"{name}: Ready {cond} (must stay refused)")
                if mine:
                    out.append(f"{name}: refused yet has a CronJob")
                continue
            if not ready(ct):
                out.append(f"{name}: not Ready")
            if len(mine) != 1:
                if not mine:
                    out.append(f"{name}: no CronJob")
                continue
            cj = mine[0]
            if cj["spec"]["schedule"] != ct["spec"]["schedule"] or bool(
                    cj["spec"].get("suspend")) != bool(ct["spec"].get("suspend")):
                out.append(f"{name}: CronJob out of sync with the spec")
            runs = self.ledger.runs(*key)
            counted = (status.get("succeededRuns", 0) + status.get("skippedRuns", 0),
                       status.get("failedRuns", 0))
            if counted != (runs["Complete"], runs["Failed"]):
                out.append(f"{name}: counted {counted}, finished {runs}")
            if status.get("missedRuns", 0):
                out.append(f"{name}: missedRuns {status['missedRuns']}")
            last = status.get("lastRun")
            healthy = next((c for c in status.get("conditions") or []
                            if c["type"] == "Healthy"), {})
            if last:
                want = "False" if last["outcome"] == "Failed" or last.get(
                    "stageErrorCount") else "True"
                if healthy.get("status") != want:
                    out.append(f"{name}: Healthy {healthy.get('status')} after a"
                               f" {last['outcome']} run")
        return out

    def converge(self, what: str, since: float, timeout: float = 180) -> float:
        """Wait until nothing is wrong; record and print how long it took since ``since``."""
        last: list[str] = []

        def probe() -> bool | None:
            nonlocal last
            last = self.problems()
            return not last or None
        try:
            wait_for(f"convergence after {what}", probe, timeout=timeout, interval=1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: still wrong: {last[:20]}") from exc
        took = time.monotonic() - since
        self.timings.setdefault(what, {})["converged_seconds"] = round(took, 1)
        print(f"\nchaos: {what}: converged in {took:.1f}s")
        return took

    def note(self, what: str, **figures: float) -> None:
        self.timings.setdefault(what, {}).update({k: round(v, 2) for k, v in figures.items()})
        print(f"\nchaos: {what}: " + ", ".join(
            f"{k} {v:.1f}s" if k.endswith("_seconds") else f"{k} {v:g}"
            for k, v in figures.items()))

    def audit_writes(self) -> list[tuple[dt.datetime, str, str]]:
        """Every write the operators' ServiceAccount made (leases aside): (when the API server
        received it, the pod's address, what)."""
        path = os.environ.get("CRONTASK_AUDIT_LOG")
        assert path, "the local backend's audit log"
        user = f"system:serviceaccount:{self.system}:{FULLNAME}"
        seen, out = set(), []
        for file in sorted(Path(path).parent.glob(Path(path).name + "*")):
            for line in file.read_text().splitlines():
                if user not in line:
                    continue
                event = json.loads(line)
                ref = event.get("objectRef") or {}
                if (event.get("user") or {}).get("username") != user \
                        or event["verb"] not in ("create", "update", "patch", "delete") \
                        or ref.get("resource") == "leases" or event["auditID"] in seen:
                    continue
                seen.add(event["auditID"])
                at = dt.datetime.fromisoformat(
                    event["requestReceivedTimestamp"].replace("Z", "+00:00"))
                out.append((at, (event.get("sourceIPs") or ["?"])[0],
                            f"{event['verb']} {ref.get('resource')}/{ref.get('name', '')}"))
        return sorted(out)


TIMINGS: dict[str, dict[str, float]] = {}
"""Every figure the tier noted, for the summary at the end of the run."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The chaos tier's figures at the end of the run (pytest captures the tests' own prints
    unless -s)."""
    if TIMINGS:
        terminalreporter.section("chaos: time to converge and to take over")
        for what, figures in TIMINGS.items():
            terminalreporter.line(f"{what}: " + ", ".join(
                f"{k} {v:.1f}s" if k.endswith("_seconds") else f"{k} {v:g}"
                for k, v in figures.items()))


def image_values(component: str, image: str) -> list[str]:
    repository, _, tag = image.rpartition(":")
    return ["--set", f"{component}.image.repository={repository}",
            "--set", f"{component}.image.tag={tag}",
            "--set", f"{component}.image.pullPolicy=Never"]


@pytest.fixture(scope="package")
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        pytest.fail("DATABASE_URL must name the PostgreSQL server the job pods use")
    system = f"crontask-chaos-{uuid.uuid4().hex[:6]}"
    namespaces = (f"{system}-a", f"{system}-b")
    for ns in (system, *namespaces):
        create_restricted_namespace(ns)
    kubectl("create", "secret", "generic", GOOD, "-n", system,
            f"--from-literal=url={database_url}")
    for ns in namespaces:
        kubectl("create", "secret", "generic", GOOD, "-n", ns,
                f"--from-literal=url={database_url}")
        kubectl("create", "secret", "generic", BAD, "-n", ns, f"--from-literal=url={UNREACHABLE}")
    ledger = Ledger()
    watches = Watches()
    for ns in namespaces:
        watches.add("jobs", ns, ledger.on_job, label_selector="crontask.dev/crontask")
    watches.start()
    helm("upgrade", "--install", RELEASE, str(REPO / "charts" / "crontask"), "-n", system,
         "--wait", "--timeout", "240s",
         *image_values("operator", os.environ.get("CRONTASK_OPERATOR_IMAGE",
                                                  "crontask-operator:dev")),
         *image_values("jobs", os.environ.get("CRONTASK_JOBS_IMAGE", "crontask-jobs:dev")),
         "--set", "operator.replicaCount=2",
         "--set", f"watch.namespaces={{{','.join(namespaces)}}}", timeout=300)
    state = World(system, namespaces, ledger, timings=TIMINGS)
    try:
        yield state
    finally:
        watches.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / "chaos.json").write_text(json.dumps(state.timings, indent=2))
        if request.session.testsfailed:
            dump_namespace(system, {
                "operator.log": ["logs", "-n", system, "-l",
                                 "app.kubernetes.io/component=operator", "--tail=-1",
                                 "--prefix"],
                "operator-previous.log": ["logs", "-n", system, "-l",
                                          "app.kubernetes.io/component=operator",
                                          "--tail=-1", "--prefix", "--previous"],
                "lease.yaml": ["get", "lease", LEASE, "-n", system, "-o", "yaml"]})
            for ns in namespaces:
                dump_namespace(ns)
            (ARTIFACTS / "chaos-ledger.json").write_text(json.dumps(ledger.jobs, indent=2))
        helm("uninstall", RELEASE, "-n", system, "--wait", check=False)
        kubectl("delete", "namespace", system, *namespaces, "--wait=false", check=False)
