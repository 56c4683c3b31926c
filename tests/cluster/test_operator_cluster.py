"""The operator against a real API server: CronTask to CronJob and back to status."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from tests.cluster.conftest import JOBS_IMAGE, REPO
from tests.kube import HELM, apply, condition, events, get, kubectl, wait_for

SECRET = "crontask-database"


def crontask(name: str, task: str = "recover", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "crontask.dev/v1alpha1",
        "kind": "CronTask",
        "metadata": {"name": name},
        "spec": {"task": task, "schedule": "*/15 * * * *",
                 "database": {"secretKeyRef": {"name": SECRET}}, **spec},
    }


def ready(namespace: str, name: str, status: str = "True") -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        cond = condition(get("crontask", name, namespace), "Ready")
        return cond if cond and cond["status"] == status else None
    return wait_for(f"{name} Ready={status}", probe)


def cronjob(namespace: str, name: str) -> dict[str, Any]:
    return wait_for(f"CronJob {name}", lambda: get("cronjob", name, namespace))


def test_crontask_becomes_an_owned_hardened_cronjob(namespace: str) -> None:
    apply(namespace, crontask("recover"))
    ct = get("crontask", "recover", namespace)
    assert ct is not None
    cj = cronjob(namespace, "recover")
    (owner,) = cj["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["uid"], owner["controller"]) == (
        "CronTask", ct["metadata"]["uid"], True)
    spec = cj["spec"]
    assert (spec["schedule"], spec["timeZone"], spec["concurrencyPolicy"]) == (
        "*/15 * * * *", "Etc/UTC", "Forbid")
    assert spec["startingDeadlineSeconds"] == 900
    job = spec["jobTemplate"]["spec"]
    assert job["activeDeadlineSeconds"] == 900 - 90
    assert job["template"]["metadata"]["labels"]["crontask.dev/crontask"] == "recover"
    container = job["template"]["spec"]["containers"][0]
    assert container["args"][-5:] == ["recover", "--stale-after", "30m", "--abandoned-after",
                                      "2h"]
    cond = ready(namespace, "recover")
    assert cond["reason"] == "CronJobReady"
    status = get("crontask", "recover", namespace)["status"]  # type: ignore[index]
    assert status["observedGeneration"] == 1
    assert status["nextScheduleTime"]
    table = kubectl("get", "ct", "-n", namespace).stdout
    assert table.split()[:6] == ["NAME", "TASK", "SCHEDULE", "SUSPEND", "READY", "LAST"], table
    listed = kubectl("get", "all", "-n", namespace, "-o", "name").stdout.split()
    assert "crontask.crontask.dev/recover" in listed, listed
    # No finalizer: deleting a CronTask never waits for a running operator.
    assert not metadata_of(namespace, "recover").get("finalizers")


def metadata_of(namespace: str, name: str) -> dict[str, Any]:
    obj = get("crontask", name, namespace)
    assert obj is not None
    return dict(obj["metadata"])


def test_spec_updates_propagate(namespace: str) -> None:
    apply(namespace, crontask("decay", "decay", schedule="0 * * * *"))
    cronjob(namespace, "decay")
    kubectl("patch", "ct", "decay", "-n", namespace, "--type=merge", "-p", json.dumps(
        {"spec": {"suspend": True, "schedule": "30 * * * *",
                  "decay": {"window": "40m", "workers": 3}}}))

    def updated() -> dict[str, Any] | None:
        cj = get("cronjob", "decay", namespace) or {}
        spec = cj.get("spec") or {}
        args = spec["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
        ok = spec.get("suspend") is True and spec.get("schedule") == "30 * * * *" \
            and "40m" in args and args[-2:] == ["--workers", "3"]
        return cj if ok else None
    wait_for("the update on the CronJob", updated)
    ct = wait_for("observedGeneration 2", lambda: (c := get("crontask", "decay", namespace))
                  and c.get("status", {}).get("observedGeneration") == 2 and c)
    assert "nextScheduleTime" not in ct["status"], "a suspended CronTask has no next run"


def test_hand_edits_and_deletion_are_repaired(namespace: str) -> None:
    apply(namespace, crontask("recover"))
    before = cronjob(namespace, "recover")
    ready(namespace, "recover")
    kubectl("patch", "cronjob", "recover", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"schedule":"1 1 1 1 *","concurrencyPolicy":"Allow"}}')
    wait_for("the schedule to be restored", lambda: (c := get("cronjob", "recover", namespace))
             and c["spec"]["schedule"] == "*/15 * * * *"
             and c["spec"]["concurrencyPolicy"] == "Forbid")
    kubectl("delete", "cronjob", "recover", "-n", namespace)
    back = wait_for("the CronJob to come back", lambda: (c := get("cronjob", "recover", namespace))
                    and c["metadata"]["uid"] != before["metadata"]["uid"] and c)
    assert back["spec"]["schedule"] == "*/15 * * * *"
    reasons = {e["reason"] for e in events(namespace, "recover")}
    assert "DriftRepaired" in reasons


def test_foreign_cronjob_is_left_alone(namespace: str) -> None:
    kubectl("create", "cronjob", "recover", "-n", namespace, "--image=busybox:1",
            "--schedule=0 0 * * *", "--", "true")
    apply(namespace, crontask("recover"))
    cond = ready(namespace, "recover", "False")
    assert cond["reason"] == "CronJobConflict"
    cj = get("cronjob", "recover", namespace)
    assert cj is not None
    assert cj["spec"]["schedule"] == "0 0 * * *"


def test_deleting_the_crontask_collects_its_cronjob(namespace: str) -> None:
    apply(namespace, crontask("recover"))
    cronjob(namespace, "recover")
    kubectl("delete", "ct", "recover", "-n", namespace, "--wait=true")
    wait_for("garbage collection", lambda: get("cronjob", "recover", namespace) is None,
             timeout=90)


@pytest.mark.parametrize("task", ["detect-stuck", "recover-stuck"])
def test_retired_tasks_are_answered(namespace: str, task: str) -> None:
    apply(namespace, crontask("legacy", task))
    cond = ready(namespace, "legacy", "False")
    assert cond["reason"] == "TaskGone"
    assert "'recover'" in cond["message"]
    assert get("cronjob", "legacy", namespace) is None
    warnings = wait_for("a TaskGone warning", lambda: [
        e for e in events(namespace, "legacy") if e["reason"] == "TaskGone"])
    assert warnings[0]["type"] == "Warning"


def test_switching_to_a_retired_task_removes_the_cronjob(namespace: str) -> None:
    apply(namespace, crontask("legacy"))
    cronjob(namespace, "legacy")
    kubectl("patch", "ct", "legacy", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"task":"detect-stuck"}}')
    ready(namespace, "legacy", "False")
    wait_for("the CronJob to go", lambda: get("cronjob", "legacy", namespace) is None)


def test_invalid_schedule_becomes_ready_false(namespace: str) -> None:
    apply(namespace, crontask("bad", schedule="61 * * * *"))
    cond = ready(namespace, "bad", "False")
    assert cond["reason"] == "InvalidSchedule"
    assert "61 * * * *" in cond["message"]
    assert get("cronjob", "bad", namespace) is None
    kubectl("patch", "ct", "bad", "-n", namespace, "--type=merge",
            "-p", '{"spec":{"schedule":"*/10 * * * *"}}')
    ready(namespace, "bad")
    cronjob(namespace, "bad")


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"task": "vacuum"}, "Unsupported value"),
    ({"task": "decay", "process": {"batchSize": 5}}, "spec.process is only valid with task"),
    ({"task": "process", "activeDeadlineSeconds": 1800}, "shorter than process.recoverStaleAfter"),
    ({"task": "recover", "recover": {"staleAfter": "3h"}}, "abandonedAfter must be longer"),
    # What the job would refuse with exit 2 at every run is refused here, at apply.
    ({"task": "decay", "decay": {"maxDecayPerRun": 101}}, "less than or equal to 100"),
    ({"task": "decay", "decay": {"workers": 17}}, "less than or equal to 16"),
    ({"env": [{"name": "DATABASE_URL", "value": "postgresql://u:p@h/db"}]}, "never from spec.env"),
])
def test_schema_and_cel_refuse_bad_specs(namespace: str, spec: dict[str, Any],
                                         fragment: str) -> None:
    result = apply(namespace, crontask("refused", **spec), check=False)
    assert result.returncode != 0
    assert fragment in result.stderr, result.stderr


def test_name_too_long_for_the_cronjob_suffix_is_refused(namespace: str) -> None:
    result = apply(namespace, crontask("n" * 53), check=False)
    assert result.returncode != 0
    assert "at most 52 characters" in result.stderr, result.stderr


def _node_has(image: str) -> bool:
    out = kubectl("get", "nodes", "-o", "json").stdout
    names = {n for node in json.loads(out)["items"] for img in node["status"].get("images", [])
             for n in img.get("names") or []}
    return any(n == image or n.endswith("/" + image) for n in names)


def test_finished_job_is_folded_into_status(namespace: str) -> None:
    """A real run: the jobs image, a database that cannot be reached, a Failed outcome."""
    if not _node_has(JOBS_IMAGE):
        pytest.skip(f"the node has no {JOBS_IMAGE} image (hack/images.sh loads it)")
    kubectl("create", "secret", "generic", SECRET, "-n", namespace,
            "--from-literal=url=postgresql://nobody:nothing@127.0.0.1:9/none")
    apply(namespace, crontask("recover"))
    cronjob(namespace, "recover")
    kubectl("create", "job", "recover-now", "--from=cronjob/recover", "-n", namespace)

    def folded() -> dict[str, Any] | None:
        ct = get("crontask", "recover", namespace) or {}
        last = (ct.get("status") or {}).get("lastRun") or {}
        return ct if last.get("jobName") == "recover-now" else None
    ct = wait_for("the run in status", folded, timeout=180)
    last, status = ct["status"]["lastRun"], ct["status"]
    assert last["outcome"] == "Failed", last
    assert last["reason"], last
    assert status["failedRuns"] == 1
    assert status["recentRuns"][0]["jobName"] == "recover-now"
    assert status["lastFailureTime"]
    healthy = condition(ct, "Healthy")
    assert healthy is not None
    assert (healthy["status"], healthy["reason"]) == ("False", "RunFailed")
    warnings = wait_for("a RunFailed warning", lambda: [
        e for e in events(namespace, "recover") if e["reason"] == "RunFailed"])
    assert warnings[0]["type"] == "Warning"


def test_rendered_chart_passes_server_side_dry_run(namespace: str) -> None:
    """Every manifest the chart renders is accepted by this API server, admission included."""
    if not HELM or subprocess.run([HELM, "version"], capture_output=True,
                                  check=False).returncode != 0:
        pytest.skip("helm not built yet: run hack/tools.sh")
    rendered = subprocess.run(
        [HELM, "template", "crontask", str(REPO / "charts" / "crontask"), "-n", namespace,
         "--set", "defaultCronTasks.enabled=true", "--set", f"watch.namespaces={{{namespace}}}"],
        capture_output=True, text=True, check=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    assert {d["kind"] for d in docs} >= {"Deployment", "ServiceAccount", "Role", "RoleBinding",
                                         "Service", "CronTask", "Job", "Pod"}
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=rendered,
                     check=False)
    assert result.returncode == 0, result.stderr
