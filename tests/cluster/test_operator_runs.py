"""Runs on a real node, folded by the operator (issue 8's cluster-tier proofs).

- a Job whose pod writes a hostile termination message is a Failed run (InvalidReport), and the
  operator's work on that CronTask and on another one goes on;
- history limits at their maximum with 25 runs: the counters equal the number of Jobs that ever
  finished, across an operator restart, while the CronJob controller deletes old Jobs;
- a pod the runtime cannot start, and a pod evicted mid-run, are replaced within the run (the
  operator's pod failure policy) without spending backoffLimit 0; a container that can never
  start is reported at the deadline, naming the start error;
- a refused spec suspends the CronJob, and fixing it resumes it;
- a no-op resync writes nothing for specs the API server canonicalises (empty env values,
  quantities such as ``+1``), and the operator's quantity spellings are the server's own;
- the time from a Job finishing to its run in the status, measured (printed, not asserted).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import statistics
import threading
import time
import uuid
from typing import Any

import pytest

from crontask_operator import quantities
from tests.cluster.conftest import JOBS_IMAGE, Operator
from tests.kube import (
    ARTIFACTS,
    apply,
    condition,
    get,
    kubectl,
    kubectl_json,
    wait_for,
)

GOOD_SECRET = "crontask-database"
BAD_SECRET = "crontask-database-unreachable"
UNREACHABLE = "postgresql://nobody:nothing@127.0.0.1:9/none"


def crontask(name: str, task: str = "recover", secret: str = BAD_SECRET,
             **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "crontask.dev/v1alpha1", "kind": "CronTask",
            "metadata": {"name": name},
            "spec": {"task": task, "schedule": "0 3 * * *", "suspend": True,
                     "database": {"secretKeyRef": {"name": secret}}, **spec}}


def node_has_jobs_image() -> bool:
    out = kubectl("get", "nodes", "-o", "json").stdout
    names = {n for node in json.loads(out)["items"] for img in node["status"].get("images", [])
             for n in img.get("names") or []}
    return any(n == JOBS_IMAGE or n.endswith("/" + JOBS_IMAGE) for n in names)


def require_image() -> None:
    if not node_has_jobs_image():
        pytest.skip(f"the node has no {JOBS_IMAGE} image (hack/images.sh loads it)")


def secrets(namespace: str, database_url: str | None = None) -> None:
    kubectl("create", "secret", "generic", BAD_SECRET, "-n", namespace,
            f"--from-literal=url={UNREACHABLE}")
    if database_url:
        kubectl("create", "secret", "generic", GOOD_SECRET, "-n", namespace,
                f"--from-literal=url={database_url}")


def status_of(namespace: str, name: str) -> dict[str, Any]:
    return dict((get("crontask", name, namespace) or {}).get("status") or {})


def ready(namespace: str, name: str, status: str = "True") -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        cond = condition(get("crontask", name, namespace), "Ready")
        return cond if cond and cond["status"] == status else None
    return wait_for(f"{name} Ready={status}", probe, timeout=90)


def restricted_pod(command: list[str], env: list[dict[str, Any]] | None = None
                   ) -> dict[str, Any]:
    return {
        "restartPolicy": "Never", "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "crontask-job", "image": JOBS_IMAGE, "imagePullPolicy": "Never",
            "command": command, "env": env or [],
            "terminationMessagePolicy": "File",
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"},
                          "limits": {"memory": "128Mi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}}}]}


HOSTILE = {
    "deep": "[" * 1990,
    "nan": '{"v":1,"task":"recover","status":"completed","counts":{"a":NaN}}',
    "int64": '{"v":1,"task":"recover","status":"completed","counts":{"a":99999999999999999999}}',
    "version": '{"v":true,"task":"recover","status":"completed"}',
    "text": "Traceback (most recent call last): boom",
    "unicode": "é" * 2048,
    "shape": '{"v":1,"task":"recover","status":"completed","stage_errors":[["a"]]}',
}


@pytest.mark.timeout(600)
def test_hostile_termination_messages_are_failed_runs_and_work_goes_on(
        namespace: str, operator: Operator) -> None:
    """Issue 8.3 on a real node: each folds as Failed/InvalidReport; meanwhile another
    CronTask's spec change and CronJob deletion are still handled."""
    require_image()
    secrets(namespace)
    apply(namespace, crontask("victim"))
    apply(namespace, crontask("bystander"))
    cj = wait_for("the victim's CronJob", lambda: get("cronjob", "victim", namespace))
    ready(namespace, "bystander")
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": "victim",
             "uid": cj["metadata"]["uid"], "controller": True}
    labels = {"crontask.dev/crontask": "victim", "crontask.dev/task": "recover"}
    for key, text in HOSTILE.items():
        script = f"open('/dev/termination-log', 'w').write({text!r})"
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": f"victim-{key}", "labels": labels,
                            "ownerReferences": [owner]},
               "spec": {"backoffLimit": 0, "template": {
                   "metadata": {"labels": labels},
                   "spec": restricted_pod(["/opt/crontask/bin/python", "-c", script])}}}
        apply(namespace, job)
    kubectl("patch", "ct", "bystander", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"schedule":"0 4 * * *"}}')
    kubectl("delete", "cronjob", "bystander", "-n", namespace)

    def all_folded() -> dict[str, Any] | None:
        status = status_of(namespace, "victim")
        return status if status.get("failedRuns") == len(HOSTILE) else None
    status = wait_for("every hostile run folded", all_folded, timeout=240)
    assert status.get("succeededRuns", 0) == 0
    reasons = {r["jobName"]: r.get("reason") for r in status["recentRuns"]}
    assert set(reasons.values()) == {"InvalidReport"}, reasons
    assert status["lastRun"]["outcome"] == "Failed"
    assert len(status["lastRun"]["message"]) <= 1024
    back = wait_for("the bystander's CronJob recreated with the new schedule",
                    lambda: (c := get("cronjob", "bystander", namespace))
                    and c["spec"]["schedule"] == "0 4 * * *" and c)
    assert back["metadata"]["ownerReferences"][0]["name"] == "bystander"
    assert status_of(namespace, "bystander")["observedGeneration"] == 2
    assert condition(get("crontask", "bystander", namespace), "Ready")["status"] == "True"  # type: ignore[index]


def migrate(namespace: str) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
           "spec": {"backoffLimit": 2, "template": {"spec": restricted_pod(
               ["/opt/crontask/bin/crontask-job", "migrate"],
               [{"name": "DATABASE_URL", "valueFrom": {"secretKeyRef": {
                   "name": GOOD_SECRET, "key": "url"}}}])}}}
    apply(namespace, job)
    kubectl("wait", "--for=condition=Complete", "job/migrate", "-n", namespace,
            "--timeout=180s", timeout=200)


def run_batch(namespace: str, cronjob: str, names: list[str]) -> dict[str, str]:
    """Start a Job of each name from the CronJob and wait for each to finish: its final
    condition (Complete or Failed), or "gone" if it was deleted before the wait saw it."""
    for name in names:
        kubectl("create", "job", name, f"--from=cronjob/{cronjob}", "-n", namespace)

    def final(name: str) -> str | None:
        job = get("job", name, namespace)
        if job is None:
            return "gone"
        return next((c["type"] for c in (job.get("status") or {}).get("conditions") or []
                     if c.get("status") == "True" and c.get("type") in ("Complete", "Failed")),
                    None)
    return {name: wait_for(f"Job {name} to finish", lambda name=name: final(name), timeout=180)
            for name in names}


def pod_endings(namespace: str, job: str) -> list[str]:
    """How each pod of a Job ended (reason and exit code), for a failure's message."""
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
    return [f"{p['metadata']['name']}: {t.get('reason')} {t.get('exitCode')} {t.get('message')}"
            for p in pods for s in (p["status"].get("containerStatuses") or [])
            if (t := (s.get("state") or {}).get("terminated"))]


@pytest.mark.timeout(900)
def test_history_limits_at_max_count_every_run_once(namespace: str,
                                                    operator: Operator) -> None:
    """Issue 8.1: limits 10/10 and 25 runs (13 succeeded, 12 failed): the counters equal the
    Jobs that ever finished, while the CronJob controller deletes all but 20, and stay so across
    an operator restart."""
    require_image()
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        pytest.skip("DATABASE_URL is not set: successful runs need the cluster's PostgreSQL")
    secrets(namespace, database_url)
    migrate(namespace)
    apply(namespace, crontask("history", secret=GOOD_SECRET, successfulJobsHistoryLimit=10,
                              failedJobsHistoryLimit=10))
    wait_for("the CronJob", lambda: get("cronjob", "history", namespace))
    ready(namespace, "history")
    good = [f"history-ok-{i}" for i in range(13)]
    for start in range(0, len(good), 5):
        ended = run_batch(namespace, "history", good[start:start + 5])
        # A pod the runtime could not start is replaced (the pod failure policy): every run
        # against the good database succeeds, whatever the node's hiccups.
        for name, how in ended.items():
            assert how == "Complete", (name, how, pod_endings(namespace, name))
    kubectl("patch", "ct", "history", "-n", namespace, "--type=merge", "-p",
            json.dumps({"spec": {"database": {"secretKeyRef": {"name": BAD_SECRET}}}}))
    wait_for("the CronJob to use the unreachable database", lambda: (
        c := get("cronjob", "history", namespace)) and BAD_SECRET in json.dumps(c["spec"]))
    bad = [f"history-bad-{i}" for i in range(12)]
    for start in range(0, len(bad), 5):
        ended = run_batch(namespace, "history", bad[start:start + 5])
        assert set(ended.values()) == {"Failed"}, ended

    last: dict[str, Any] = {}

    def counted() -> dict[str, Any] | None:
        last.update(status_of(namespace, "history"))
        done = (last.get("succeededRuns"), last.get("failedRuns")) == (13, 12)
        return last if done else None
    try:
        status = wait_for("25 runs counted", counted, timeout=240)
    except AssertionError as exc:
        runs = {r.get("jobName"): (r.get("outcome"), r.get("reason"))
                for r in last.get("recentRuns") or []}
        raise AssertionError(f"{exc}: succeeded {last.get('succeededRuns')}, failed"
                             f" {last.get('failedRuns')}, recent runs {runs}") from None
    assert status.get("skippedRuns", 0) == 0
    assert status.get("missedRuns", 0) == 0

    def bookkeeping_settled() -> set[str] | None:
        jobs = kubectl_json("get", "jobs", "-n", namespace, "-l",
                            "crontask.dev/crontask=history")["items"]
        uids = {j["metadata"]["uid"] for j in jobs}
        counted_now = set(status_of(namespace, "history").get("countedJobs") or [])
        return uids if uids == counted_now else None
    uids = wait_for("countedJobs to hold exactly the Jobs that still exist", bookkeeping_settled)
    assert len(uids) <= 20, "the CronJob controller keeps at most the history limits"
    operator.restart()
    kubectl("patch", "ct", "history", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"logLevel":"DEBUG"}}')
    wait_for("the restarted operator to reconcile the CronTask", lambda: (
        status_of(namespace, "history").get("observedGeneration") == 3), timeout=90)
    after = status_of(namespace, "history")
    assert (after["succeededRuns"], after["failedRuns"]) == (13, 12)
    assert after.get("missedRuns", 0) == 0


def run_of_template(namespace: str, cronjob: str, name: str, command: list[str],
                    **spec: Any) -> None:
    """Start a run of the CronJob by hand, as ``kubectl create job --from=cronjob`` does, from
    the operator's own Job template with only ``command`` (and the ``spec`` fields) changed:
    the pod failure policy, backoffLimit and pod are the operator's."""
    cj = wait_for(f"the {cronjob} CronJob", lambda: get("cronjob", cronjob, namespace))
    template = cj["spec"]["jobTemplate"]
    job_spec = {**template["spec"], **spec}
    assert job_spec["backoffLimit"] == 0 and job_spec["podFailurePolicy"]["rules"], job_spec
    (container,) = job_spec["template"]["spec"]["containers"]
    container["command"] = command
    owner = {"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob,
             "uid": cj["metadata"]["uid"], "controller": True}
    apply(namespace, {"apiVersion": "batch/v1", "kind": "Job",
                      "metadata": {"name": name, "ownerReferences": [owner],
                                   "labels": template["metadata"]["labels"]},
                      "spec": job_spec})


def folded_run(namespace: str, crontask_name: str, job: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        last = status_of(namespace, crontask_name).get("lastRun") or {}
        return last if last.get("jobName") == job else None
    return wait_for(f"the run of {job} folded", probe, timeout=240)


@pytest.mark.timeout(400)
def test_a_pod_that_cannot_start_is_replaced_and_the_run_names_why(
        namespace: str, operator: Operator) -> None:
    """A container the runtime cannot start is not the run's failure. The Job the operator's
    CronJob describes (backoffLimit 0) gets a new pod, with the Job controller's back-off,
    without spending its backoffLimit; one that can never start ends at the deadline, and the
    run is folded as DeadlineExceeded naming the start error, not as an InvalidReport of the
    runtime's text (which the kubelet puts where the report would be)."""
    require_image()
    secrets(namespace)
    apply(namespace, crontask("nostart"))
    ready(namespace, "nostart")
    run_of_template(namespace, "nostart", "nostart-by-hand", ["/nonexistent/crontask-job"],
                    activeDeadlineSeconds=50)
    last = folded_run(namespace, "nostart", "nostart-by-hand")
    job = get("job", "nostart-by-hand", namespace)
    assert job is not None
    endings = pod_endings(namespace, "nostart-by-hand")
    assert len(endings) >= 2, f"the pod was not replaced: {endings}"
    assert all(" StartError 128 " in e for e in endings), endings
    assert not job["status"].get("failed"), "a pod that never started spent the backoffLimit"
    assert (last["outcome"], last["reason"]) == ("Failed", "DeadlineExceeded"), last
    assert "StartError (exit code 128)" in last["message"], last
    assert "/nonexistent/crontask-job" in last["message"], last
    assert status_of(namespace, "nostart")["failedRuns"] == 1


@pytest.mark.timeout(400)
def test_an_evicted_pod_is_replaced_and_the_run_succeeds(
        namespace: str, operator: Operator) -> None:
    """A pod evicted mid-run (a node drain, preemption: the API server marks it
    DisruptionTarget) is replaced within the same run, without spending backoffLimit 0, and
    the run is Succeeded once the replacement finishes, counted once."""
    require_image()
    secrets(namespace)
    apply(namespace, crontask("evicted"))
    ready(namespace, "evicted")
    # As the jobs do on SIGTERM (a PID 1 without a handler would not even see it): exit 1.
    stops_on_sigterm = ("import signal, sys, time;"
                        " signal.signal(signal.SIGTERM, lambda *_: sys.exit(1)); time.sleep(12)")
    run_of_template(namespace, "evicted", "evicted-by-hand",
                    ["/opt/crontask/bin/python", "-c", stops_on_sigterm])

    def running_pod() -> str | None:
        pods = kubectl_json("get", "pods", "-n", namespace, "-l",
                            "job-name=evicted-by-hand")["items"]
        return next((p["metadata"]["name"] for p in pods
                     if p["status"].get("phase") == "Running"), None)
    first = wait_for("the run's pod running", running_pod, timeout=120)
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": first, "namespace": namespace}}
    kubectl("create", "--raw", f"/api/v1/namespaces/{namespace}/pods/{first}/eviction",
            "-f", "-", stdin=json.dumps(eviction))
    last = folded_run(namespace, "evicted", "evicted-by-hand")
    job = get("job", "evicted-by-hand", namespace)
    assert job is not None and job["status"].get("succeeded") == 1, job and job["status"]
    assert not job["status"].get("failed"), "an evicted pod spent the backoffLimit"
    # The evicted pod is gone (an eviction deletes it); the one that finished is another.
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=evicted-by-hand")["items"]
    done = [p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Succeeded"]
    assert done and first not in done, (first, [p["metadata"]["name"] for p in pods])
    assert last["outcome"] == "Succeeded", last
    status = status_of(namespace, "evicted")
    assert (status.get("succeededRuns"), status.get("failedRuns", 0)) == (1, 0), status


def test_a_refused_spec_suspends_the_cronjob_until_fixed(namespace: str) -> None:
    """Issue 8.5: a recover threshold below the process stage timeout refuses the process
    CronTask: its CronJob is suspended, the condition says so, and the fix resumes it."""
    secrets(namespace)
    apply(namespace, crontask("process", "process", suspend=False,
                              process={"stageTimeout": "10m"}))
    cj = wait_for("the process CronJob", lambda: get("cronjob", "process", namespace))
    assert cj["spec"]["suspend"] is False
    ready(namespace, "process")
    apply(namespace, crontask("recover", recover={"staleAfter": "5m"}))
    cond = ready(namespace, "process", "False")
    assert cond["reason"] == "DeadlineBeyondRecovery"
    assert "CronJob process is suspended until the spec is fixed" in cond["message"]
    wait_for("the CronJob to be suspended",
             lambda: get("cronjob", "process", namespace)["spec"]["suspend"] is True)  # type: ignore[index]
    kubectl("patch", "ct", "recover", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"recover":{"staleAfter":"30m"}}}')
    ready(namespace, "process")
    wait_for("the CronJob to resume",
             lambda: get("cronjob", "process", namespace)["spec"]["suspend"] is False)  # type: ignore[index]
    kubectl("patch", "ct", "process", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"resources":{"limits":{"memory":"1e999999999"}}}}')
    cond = ready(namespace, "process", "False")
    assert cond["reason"] == "InvalidSpec" and "out of range" in cond["message"]
    wait_for("the CronJob to be suspended again",
             lambda: get("cronjob", "process", namespace)["spec"]["suspend"] is True)  # type: ignore[index]


SPELLINGS = ["+1", "1000m", "0.5Gi", "1000", "1e3", "12e-1", "1.5", "1024Mi", "1.", "+.5",
             "0.001Ki", "300Mi", "1073741824", "100M", "1e-10", "9Ei", "5000m", "0.1",
             "250m", "2Gi", "1536Ki", "7e2", "3k", "1n", "1500u", "1001u", "1000u", "1e-4",
             "0.0005", "12345678901n"]


def test_the_servers_quantity_spellings_are_the_operators(namespace: str) -> None:
    """Each spelling, as a memory limit in a server-side dry run, comes back exactly as
    ``quantities.canonical`` says (a container's limits are a ResourceList: rounded to milli);
    as an emptyDir sizeLimit (a plain quantity) too."""
    plain = f"crontask-cluster-q{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", plain)
    try:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"},
               "spec": {"containers": [
                   {"name": f"c{i}", "image": "example.invalid/none:1",
                    "resources": {"limits": {"memory": text}}}
                   for i, text in enumerate(SPELLINGS)],
                   "volumes": [{"name": f"v{i}", "emptyDir": {"sizeLimit": text}}
                               for i, text in enumerate(SPELLINGS)]}}
        out = kubectl("create", "--dry-run=server", "-n", plain, "-o", "json", "-f", "-",
                      stdin=json.dumps(pod))
        spec = json.loads(out.stdout)["spec"]
    finally:
        kubectl("delete", "namespace", plain, "--wait=false", check=False)
    limits = [c["resources"]["limits"]["memory"] for c in spec["containers"]]
    assert limits == [quantities.canonical(t, resource_list=True) for t in SPELLINGS]
    sizes = [v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if "emptyDir" in v]
    assert sizes == [quantities.canonical(t) for t in SPELLINGS]


@pytest.mark.timeout(300)
def test_a_no_op_resync_writes_nothing(namespace: str, operator: Operator) -> None:
    """Issue 8.6: empty env values, ``+1`` and friends, fieldRef without apiVersion: after the
    CronJob exists, an operator restart (which reconciles every CronTask) writes nothing."""
    secrets(namespace)
    spec = {"env": [{"name": "EMPTY", "value": ""},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                        "resource": "limits.memory", "divisor": "1024Ki"}}},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {
                        "name": "none", "key": "k", "optional": True}}}],
            "resources": {"requests": {"cpu": "+1", "memory": "0.5Gi"},
                          "limits": {"memory": 1073741824, "cpu": "1000m"}}}
    apply(namespace, crontask("canonical", suspend=False, **spec))
    ready(namespace, "canonical")
    cj = get("cronjob", "canonical", namespace)
    ct = get("crontask", "canonical", namespace)
    assert cj is not None and ct is not None
    operator.restart()
    kubectl("patch", "ct", "canonical", "-n", namespace, "--type=merge",
            "-p", '{"metadata":{"labels":{"touched":"yes"}}}')
    # A CronTask made after the restart is handled after the restart's initial reconcile of
    # every CronTask was queued: once it is Ready, "canonical" has been reconciled too.
    apply(namespace, crontask("marker"))
    ready(namespace, "marker")
    time.sleep(3)
    after = get("cronjob", "canonical", namespace)
    assert after is not None
    assert after["metadata"]["resourceVersion"] == cj["metadata"]["resourceVersion"], (
        "the CronJob was written again")
    status_after = status_of(namespace, "canonical")
    assert status_after == ct["status"], "the status was written again"


@pytest.mark.timeout(900)
class Watcher:
    """Our own watches, in a thread: when each Job was first seen finished, and when its run
    first appeared in the CronTask's status (both on this machine's monotonic clock)."""

    def __init__(self, namespace: str, finished: dict[str, float],
                 folded: dict[str, float]) -> None:
        self.namespace, self.finished, self.folded = namespace, finished, folded
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.thread.start()

        async def spawn() -> None:
            self.tasks = [asyncio.create_task(self._jobs()), asyncio.create_task(self._crontask())]
        asyncio.run_coroutine_threadsafe(spawn(), self.loop).result(timeout=10)
        time.sleep(2)

    def stop(self) -> None:
        async def cancel() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.sleep(0.5)  # let the closed connections' transports finish closing
            await self.loop.shutdown_asyncgens()
        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        # A cancelled watch can leave its socket to the garbage collector: collect it here, in
        # this test (which ignores that warning), not in whichever test runs next.
        gc.collect()

    async def _stream(self, list_call: Any, on_event: Any, **kwargs: Any) -> None:
        from kubernetes_asyncio import watch

        async with watch.Watch() as stream:
            async for event in stream.stream(list_call, **kwargs, _request_timeout=600):
                on_event(event["object"], time.monotonic())

    async def _jobs(self) -> None:
        from kubernetes_asyncio import client, config
        await config.load_kube_config()
        async with client.ApiClient() as api:
            def on_job(job: Any, at: float) -> None:
                for cond in (job.status.conditions or []) if job.status else []:
                    if cond.type in ("Complete", "Failed") and cond.status == "True":
                        self.finished.setdefault(job.metadata.name, at)
            await self._stream(client.BatchV1Api(api).list_namespaced_job, on_job,
                               namespace=self.namespace,
                               label_selector="crontask.dev/crontask=latency")

    async def _crontask(self) -> None:
        from kubernetes_asyncio import client, config
        await config.load_kube_config()
        async with client.ApiClient() as api:
            def on_crontask(obj: Any, at: float) -> None:
                for run in (obj.get("status") or {}).get("recentRuns") or []:
                    self.folded.setdefault(run["jobName"], at)
            await self._stream(client.CustomObjectsApi(api).list_namespaced_custom_object,
                               on_crontask, group="crontask.dev", version="v1alpha1",
                               namespace=self.namespace, plural="crontasks",
                               field_selector="metadata.name=latency")


def test_status_latency_from_job_finished_to_status(namespace: str) -> None:
    """Issue 10.1: a finished run reaches the status within 2 s (p99) of the Job completing.
    Measured here with our own watches on the Jobs and the CronTask, printed and kept in
    .artifacts/e2e/status-latency.json; not asserted (no timed assertions in tests)."""
    require_image()
    secrets(namespace)
    apply(namespace, crontask("latency"))
    wait_for("the CronJob", lambda: get("cronjob", "latency", namespace))
    finished: dict[str, float] = {}
    folded: dict[str, float] = {}
    watcher = Watcher(namespace, finished, folded)
    watcher.start()
    names = [f"latency-{i}" for i in range(20)]
    try:
        time.sleep(2)
        for start in range(0, len(names), 5):
            run_batch(namespace, "latency", names[start:start + 5])
        try:
            wait_for("every run in the status",
                     lambda: set(names) <= set(folded) or None, timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; not in the status: {sorted(set(names) - set(folded))},"
                                 f" finished: {sorted(finished)}") from exc
    finally:
        watcher.stop()
    wait_for("each run counted once", lambda: status_of(namespace, "latency").get(
        "failedRuns") == len(names), timeout=60)
    latencies = sorted(folded[n] - finished[n] for n in names if n in finished)
    assert len(latencies) == len(names), (finished, folded)
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    figures = {"runs": len(latencies), "p50": statistics.median(latencies), "p99": p99,
               "max": latencies[-1], "min": latencies[0]}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "status-latency.json").write_text(json.dumps(figures, indent=2))
    print(f"\nJob finished -> status, {len(latencies)} runs: p50 {figures['p50']:.3f}s,"
          f" p99 {p99:.3f}s, max {figures['max']:.3f}s")
