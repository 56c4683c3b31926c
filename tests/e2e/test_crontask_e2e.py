"""crontask end to end, as a platform engineer uses it: helm, kubectl, real pods, real PostgreSQL.

The tests run in file order and share one Helm release; each task test reseeds the database.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.e2e.conftest import (
    DB_SECRET,
    RELEASE,
    REPO,
    crontask,
    run_now,
    wait_for_run,
)
from tests.kube import condition, get, helm, kubectl, kubectl_json, wait_for

EXAMPLES = REPO / "examples"


def _examples() -> dict[str, dict[str, Any]]:
    """The example CronTasks by task, read the way kubectl would read them."""
    import yaml

    out = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CronTask":
                out[doc["spec"]["task"]] = doc
    return out


def _cronjob_of(ct: dict[str, Any], namespace: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        name = (ct_now := crontask(ct["metadata"]["name"], namespace)).get("status", {}).get(
            "cronJobName") or ct_now["metadata"]["name"]
        return get("cronjob", name, namespace)
    return wait_for(f"the CronJob of {ct['metadata']['name']}", probe)


@pytest.fixture(scope="module")
def applied(release: str, namespace: str) -> dict[str, dict[str, Any]]:
    """`kubectl apply -f examples/` into the test namespace, suspended.

    Suspended so that no scheduled run races the runs the tests start by hand
    (`kubectl create job --from=cronjob/...` works on a suspended CronJob).
    """
    examples = _examples()
    assert set(examples) == {"recover", "decay", "process"}, "examples/ must show all three tasks"
    for ct in examples.values():
        ct["spec"]["database"]["secretKeyRef"]["name"] = DB_SECRET
        ct["spec"]["suspend"] = True
        kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(ct))
    return examples


def test_operator_is_ready_and_helm_test_passes(release: str, namespace: str) -> None:
    deploy = kubectl_json("get", "deployment", "-n", namespace,
                          "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert deploy, "the chart installed no Deployment"
    assert all(d["status"].get("readyReplicas") == d["spec"]["replicas"] for d in deploy)
    helm("test", RELEASE, "-n", namespace, "--timeout", "120s")


def test_examples_become_hardened_cronjobs(applied: dict[str, dict[str, Any]],
                                           namespace: str) -> None:
    for task, ct in applied.items():
        cj = _cronjob_of(ct, namespace)
        spec = cj["spec"]
        assert spec["schedule"] == ct["spec"]["schedule"], task
        assert spec["concurrencyPolicy"] == ct["spec"].get("concurrencyPolicy", "Forbid")
        assert spec["suspend"] is True
        assert spec["startingDeadlineSeconds"] > 0
        assert spec.get("timeZone", "UTC") == ct["spec"].get("timeZone", "UTC")
        job = spec["jobTemplate"]["spec"]
        assert job["activeDeadlineSeconds"] > 0
        owner = cj["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner.get("controller")) == (
            "CronTask", ct["metadata"]["name"], True)
        pod = job["template"]["spec"]
        container = pod["containers"][0]
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert (pod.get("securityContext") or {}).get("runAsNonRoot") or sc.get("runAsNonRoot")
        assert container["terminationMessagePath"] == "/dev/termination-log"
        assert container["args"][-1] != "" and task in container["args"]
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": DB_SECRET,
                                                                    "key": "url"}
    table = kubectl("get", "ct", "-n", namespace).stdout
    header = table.splitlines()[0].split()
    for column in ("NAME", "TASK", "SCHEDULE", "SUSPEND", "READY", "AGE"):
        assert column in header, table
    for ct in applied.values():
        ready = wait_for(f"{ct['metadata']['name']} Ready",
                         lambda ct=ct: condition(crontask(ct["metadata"]["name"], namespace),
                                                 "Ready"))
        assert ready["status"] == "True", ready


def _cj_name(ct: dict[str, Any], namespace: str) -> str:
    return str(_cronjob_of(ct, namespace)["metadata"]["name"])


def test_recover_fails_stuck_conversations(applied: dict[str, dict[str, Any]], namespace: str,
                                           seeded: psycopg.Connection[Any]) -> None:
    ct = applied["recover"]
    job = run_now(_cj_name(ct, namespace), namespace)
    last = wait_for_run(ct["metadata"]["name"], namespace, job)
    assert last["outcome"] == "Succeeded", last
    assert last["counts"]["recovered"] == 3
    rows = seeded.execute("SELECT count(*) FROM conversations WHERE status = 'failed'").fetchone()
    assert rows == (3,)


def test_decay_completes_then_skips_recent_execution(applied: dict[str, dict[str, Any]],
                                                    namespace: str,
                                                    seeded: psycopg.Connection[Any]) -> None:
    ct = applied["decay"]
    name = ct["metadata"]["name"]
    first = wait_for_run(name, namespace, run_now(_cj_name(ct, namespace), namespace))
    assert first["outcome"] == "Succeeded", first
    assert first["counts"]["users_decayed"] >= 4
    second = wait_for_run(name, namespace, run_now(_cj_name(ct, namespace), namespace))
    assert second["outcome"] == "Skipped", second
    assert second["reason"] == "recent_execution"
    status = crontask(name, namespace)["status"]
    assert status["skippedRuns"] >= 1 and status["succeededRuns"] >= 1, status
    history = seeded.execute("SELECT count(*) FROM score_history").fetchone()
    assert history is not None and history[0] == first["counts"]["users_decayed"]


def test_process_surfaces_stage_errors_and_timings(applied: dict[str, dict[str, Any]],
                                                   namespace: str,
                                                   seeded: psycopg.Connection[Any]) -> None:
    ct = applied["process"]
    name = ct["metadata"]["name"]
    last = wait_for_run(name, namespace, run_now(_cj_name(ct, namespace), namespace))
    assert last["outcome"] == "Succeeded", last
    assert last["counts"]["processed"] == 5
    assert last["stageErrorCount"] == 1
    summarise = last["stageErrors"]["summarise"]
    assert summarise["count"] == 1
    assert "no messages" in summarise["lastMessage"]
    assert {"load_transcript", "summarise", "persist"} <= set(last["stageTimings"])
    healthy = condition(crontask(name, namespace), "Healthy")
    assert healthy is not None and healthy["status"] == "False", healthy
    events = kubectl("get", "events", "-n", namespace, "--field-selector",
                     f"involvedObject.name={name},type=Warning").stdout
    assert "summarise" in events, events
    table = kubectl("get", "ct", name, "-n", namespace).stdout
    assert "Succeeded" in table and " 1 " in table, table
    stored = seeded.execute(
        "SELECT result FROM job_executions WHERE job_name = 'process' AND status = 'completed'"
    ).fetchone()
    assert stored is not None and stored[0]["stage_errors"], stored


def test_deleted_cronjob_comes_back(applied: dict[str, dict[str, Any]], namespace: str) -> None:
    ct = applied["recover"]
    cj = _cronjob_of(ct, namespace)
    kubectl("delete", "cronjob", cj["metadata"]["name"], "-n", namespace)
    back = wait_for("the deleted CronJob to be recreated",
                    lambda: (c := get("cronjob", cj["metadata"]["name"], namespace))
                    and c["metadata"]["uid"] != cj["metadata"]["uid"] and c)
    assert back["spec"]["schedule"] == cj["spec"]["schedule"]


def test_edited_cronjob_is_repaired(applied: dict[str, dict[str, Any]], namespace: str) -> None:
    ct = applied["decay"]
    name = _cj_name(ct, namespace)
    kubectl("patch", "cronjob", name, "-n", namespace, "--type=merge",
            "-p", '{"spec":{"schedule":"1 1 1 1 *"}}')
    wait_for("the edited CronJob's schedule to be restored",
             lambda: (c := get("cronjob", name, namespace))
             and c["spec"]["schedule"] == ct["spec"]["schedule"])


def test_suspend_resume_and_spec_update_propagate(applied: dict[str, dict[str, Any]],
                                                  namespace: str) -> None:
    ct = applied["process"]
    name, cj = ct["metadata"]["name"], _cj_name(ct, namespace)
    # The examples are applied suspended: resume first, then suspend again.
    kubectl("patch", "ct", name, "-n", namespace, "--type=merge", "-p",
            '{"spec":{"suspend":false,"schedule":"0 3 1 1 *","process":{"batchSize":4}}}')

    def updated() -> bool:
        c = get("cronjob", cj, namespace) or {}
        spec = c.get("spec", {})
        args = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get(
            "spec", {}).get("containers", [{}])[0].get("args", [])
        return (spec.get("suspend") is False and spec.get("schedule") == "0 3 1 1 *"
                and "4" in args)
    wait_for("resume and the new schedule and batch size to reach the CronJob", updated)
    kubectl("patch", "ct", name, "-n", namespace, "--type=merge", "-p",
            '{"spec":{"suspend":true}}')
    wait_for("suspend to reach the CronJob",
             lambda: (get("cronjob", cj, namespace) or {}).get("spec", {}).get("suspend") is True)
    observed = crontask(name, namespace)
    assert observed["status"]["observedGeneration"] == observed["metadata"]["generation"]


def test_retired_task_is_answered_with_task_gone(release: str, namespace: str) -> None:
    manifest = {
        "apiVersion": "crontask.dev/v1alpha1", "kind": "CronTask",
        "metadata": {"name": "old-detect"},
        "spec": {"task": "detect-stuck", "schedule": "*/5 * * * *",
                 "database": {"secretKeyRef": {"name": DB_SECRET}}},
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
    ready = wait_for("TaskGone on the retired task",
                     lambda: condition(crontask("old-detect", namespace), "Ready"))
    assert (ready["status"], ready["reason"]) == ("False", "TaskGone")
    assert "recover" in ready["message"]
    cronjobs = kubectl_json("get", "cronjobs", "-n", namespace,
                            "-l", "crontask.dev/crontask=old-detect")["items"]
    assert cronjobs == []
    events = kubectl("get", "events", "-n", namespace, "--field-selector",
                     "involvedObject.name=old-detect,type=Warning").stdout
    assert "recover" in events


def test_invalid_manifest_is_rejected_by_kubectl_apply(release: str, namespace: str) -> None:
    manifest = {
        "apiVersion": "crontask.dev/v1alpha1", "kind": "CronTask",
        "metadata": {"name": "bad-task"},
        "spec": {"task": "vacuum", "schedule": "*/5 * * * *",
                 "database": {"secretKeyRef": {"name": DB_SECRET}},
                 "process": {"batchSize": -1}},
    }
    result = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest),
                     check=False)
    assert result.returncode != 0
    assert "spec.task" in result.stderr and "Unsupported value" in result.stderr, result.stderr
    assert get("crontask", "bad-task", namespace) is None


def test_schedule_the_server_rejects_becomes_ready_false(release: str, namespace: str) -> None:
    manifest = {
        "apiVersion": "crontask.dev/v1alpha1", "kind": "CronTask",
        "metadata": {"name": "bad-schedule"},
        "spec": {"task": "recover", "schedule": "61 * * * *",
                 "database": {"secretKeyRef": {"name": DB_SECRET}}},
    }
    result = kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest),
                     check=False)
    if result.returncode != 0:
        # The CRD's own validation caught it first: the better outcome, and still clear.
        assert "schedule" in result.stderr, result.stderr
        return
    ready = wait_for("Ready=False on the invalid schedule",
                     lambda: (c := condition(crontask("bad-schedule", namespace), "Ready"))
                     and c["status"] == "False" and c)
    assert "schedule" in ready["message"].lower(), ready


def test_pod_killed_mid_run_is_a_failed_run(applied: dict[str, dict[str, Any]], namespace: str,
                                            seeded: psycopg.Connection[Any]) -> None:
    """Hold a lock the job needs, kill its pod while it waits, and read the verdict."""
    ct = applied["recover"]
    name = ct["metadata"]["name"]
    with seeded.transaction():
        seeded.execute("LOCK TABLE job_executions IN ACCESS EXCLUSIVE MODE")
        job = run_now(_cj_name(ct, namespace), namespace)
        pod = wait_for("the run's pod to be running", lambda: next(
            (p["metadata"]["name"] for p in kubectl_json(
                "get", "pods", "-n", namespace, "-l", f"job-name={job}")["items"]
             if p["status"].get("phase") == "Running"), None))
        kubectl("delete", "pod", pod, "-n", namespace, "--grace-period=1")
        last = wait_for_run(name, namespace, job)
    assert last["outcome"] == "Failed", last
    assert last.get("reason"), last
    failed = condition(crontask(name, namespace), "Healthy")
    assert failed is not None and failed["status"] == "False"


def test_operator_rbac_is_least_privilege(release: str, namespace: str) -> None:
    sa = kubectl_json("get", "serviceaccount", "-n", namespace,
                      "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]
    assert len(sa) == 1, sa
    who = f"system:serviceaccount:{namespace}:{sa[0]['metadata']['name']}"

    def can(verb: str, resource: str) -> bool:
        name, _, sub = resource.partition("/")
        extra = ["--subresource", sub] if sub else []
        out = kubectl("auth", "can-i", verb, name, *extra, "-n", namespace, "--as", who,
                      check=False).stdout.strip()
        return out == "yes"

    must = [("watch", "crontasks.crontask.dev"), ("patch", "crontasks.crontask.dev/status"),
            ("update", "crontasks.crontask.dev/finalizers"),
            ("create", "cronjobs.batch"), ("patch", "cronjobs.batch"), ("watch", "jobs.batch"),
            ("list", "pods"), ("create", "events")]
    must_not = [("get", "crontasks.crontask.dev"), ("patch", "crontasks.crontask.dev"),
                ("get", "cronjobs.batch"), ("get", "secrets"), ("create", "pods"),
                ("delete", "pods"),
                ("create", "jobs.batch"), ("delete", "crontasks.crontask.dev"),
                ("create", "deployments.apps"), ("escalate", "roles.rbac.authorization.k8s.io"),
                ("create", "rolebindings.rbac.authorization.k8s.io")]
    assert [m for m in must if not can(*m)] == []
    assert [m for m in must_not if can(*m)] == []


def test_deleting_a_crontask_collects_its_cronjob(applied: dict[str, dict[str, Any]],
                                                     namespace: str) -> None:
    ct = applied["decay"]
    cj = _cj_name(ct, namespace)
    kubectl("delete", "ct", ct["metadata"]["name"], "-n", namespace, "--wait=true")
    wait_for("garbage collection of the CronJob",
             lambda: get("cronjob", cj, namespace) is None)


def test_helm_uninstall_leaves_nothing_behind(release: str, namespace: str) -> None:
    # Uninstall while CronTasks exist, as users do: the operator and its RBAC go at once, and
    # the CronTasks must stay deletable without them (no finalizer holds them).
    assert kubectl_json("get", "ct", "-n", namespace)["items"], "the test needs CronTasks"
    helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "120s")
    kubectl("delete", "ct", "--all", "-n", namespace, "--wait=true", "--timeout=30s", timeout=60)
    selector = f"app.kubernetes.io/instance={RELEASE}"

    def leftovers() -> list[str]:
        return (kubectl("get", "all,serviceaccounts,roles,rolebindings,configmaps,secrets",
                        "-n", namespace, "-l", selector, "-o", "name").stdout.split()
                + kubectl("get", "clusterroles,clusterrolebindings,validatingadmissionpolicies,"
                          "validatingadmissionpolicybindings", "-l", selector,
                          "-o", "name").stdout.split()
                + kubectl("get", "cronjobs", "-n", namespace, "-o", "name").stdout.split())

    # The Deployment's pods are deleted in the background after `helm uninstall --wait`.
    wait_for("everything of the release to be gone", lambda: leftovers() == [] or None,
             timeout=90)

