"""The CronJob builder: hardened pods, the CLI contract, deadlines, labels, drift."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from operator_helpers import NOW, crontask_spec

from crontask_operator import names
from crontask_operator.cronjob import APPLIED_HASH, JobDefaults, Owner, build_cronjob, task_args
from crontask_operator.drift import drifted, is_owned_by
from crontask_operator.spec import parse_spec
from crontask_operator.validation import Timing, resolve

OWNER = Owner(name="process", namespace="ns", uid="uid-1")


def build(task: str = "process", **extra: Any) -> dict[str, Any]:
    spec = parse_spec(crontask_spec(task, **extra))
    timing = resolve(OWNER.name, spec, NOW)
    assert isinstance(timing, Timing), timing
    return build_cronjob(OWNER, spec, timing, JobDefaults())


def pod_of(cronjob: dict[str, Any]) -> dict[str, Any]:
    return dict(cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"])


def test_builder_is_deterministic_and_pure() -> None:
    assert build() == build()
    assert build()["metadata"]["name"] == "process"


def test_pod_is_hardened() -> None:
    pod = pod_of(build())
    assert pod["automountServiceAccountToken"] is False
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["terminationMessagePolicy"] == "File"
    assert container["resources"]["limits"]["memory"] == "256Mi"


@pytest.mark.parametrize("task", ["recover", "decay", "process"])
def test_only_pods_that_never_ran_or_were_disrupted_are_replaced_free(task: str) -> None:
    """The pod failure policy ignores a container the runtime could not start and a disrupted
    pod, and nothing the run itself decided: none of the jobs CLI's exit codes, no signal."""
    job = build(task, backoffLimit=0)["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0
    rules = job["podFailurePolicy"]["rules"]
    assert {r["action"] for r in rules} == {"Ignore"}
    codes = [r["onExitCodes"] for r in rules if "onExitCodes" in r]
    assert codes == [{"containerName": names.CONTAINER_NAME, "operator": "In", "values": [128]}]
    assert not set(codes[0]["values"]) & ({0, 1, 2, 3} | {128 + s for s in range(1, 65)})
    conditions = [c for r in rules for c in r.get("onPodConditions", [])]
    assert conditions == [{"type": "DisruptionTarget", "status": "True"}]
    assert pod_of(build(task))["restartPolicy"] == "Never", "a pod failure policy needs Never"


def test_database_url_comes_from_the_secret_only() -> None:
    (container,) = pod_of(build(env=[{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}]))[
        "containers"]
    db = container["env"][0]
    assert db == {"name": "DATABASE_URL",
                  "valueFrom": {"secretKeyRef": {"name": "crontask-db", "key": "url"}}}
    assert container["env"][1]["name"] == "HTTPS_PROXY"


def test_labels_reach_job_and_pod_and_owner_reference_is_controller() -> None:
    cj = build()
    for meta in (cj["metadata"], cj["spec"]["jobTemplate"]["metadata"],
                 cj["spec"]["jobTemplate"]["spec"]["template"]["metadata"]):
        assert meta["labels"][names.LABEL_CRONTASK] == "process"
        assert meta["labels"][names.LABEL_TASK] == "process"
    (ref,) = cj["metadata"]["ownerReferences"]
    assert ref["controller"] is True
    assert ref["uid"] == "uid-1"
    assert ref["kind"] == "CronTask"
    assert is_owned_by(cj, "uid-1")
    assert not is_owned_by(cj, "someone-else")


def test_time_zone_is_explicit_utc_and_policy_forbid_by_default() -> None:
    spec = build()["spec"]
    assert spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"


@pytest.mark.parametrize(("task", "extra", "expected"), [
    ("recover", {}, ["recover", "--stale-after", "30m", "--abandoned-after", "2h"]),
    ("recover", {"recover": {"staleAfter": "20m"}},
     ["recover", "--stale-after", "20m", "--abandoned-after", "2h"]),
    ("decay", {"decay": {"maxDecayPerRun": 5}},
     ["decay", "--window", "50m", "--max-decay-per-run", "5"]),
    ("decay", {"decay": {"workers": 4, "window": "30m"}},
     ["decay", "--window", "30m", "--workers", "4"]),
    ("process", {"process": {"stageTimeouts": {"summarise": "30s"}, "maxInFlight": 40,
                             "pipeline": "default"}},
     ["process", "--idle-after", "15m", "--batch-size", "10", "--max-concurrent-pipelines", "10",
      "--max-in-flight", "40", "--stage-timeout", "60s", "--stage-timeout", "summarise=30s",
      "--pipeline", "default"]),
])
def test_task_args_follow_the_cli_contract(task: str, extra: dict[str, Any],
                                           expected: list[str]) -> None:
    assert task_args(parse_spec(crontask_spec(task, **extra))) == expected


def test_container_command_line() -> None:
    (container,) = pod_of(build("decay", logLevel="DEBUG"))["containers"]
    assert container["command"] == ["/opt/crontask/bin/crontask-job"]
    assert container["args"][:6] == ["--report-file", "/dev/termination-log", "--log-format",
                                     "json", "--log-level", "DEBUG"]


def test_image_and_resources_overrides() -> None:
    cj = build(image="registry.example/jobs:1.2.3", imagePullPolicy="Always",
               resources={"limits": {"memory": "1Gi"}})
    (container,) = pod_of(cj)["containers"]
    assert container["image"] == "registry.example/jobs:1.2.3"
    assert container["imagePullPolicy"] == "Always"
    assert container["resources"]["limits"] == {"memory": "1Gi"}


def test_process_parallelism_only_when_asked() -> None:
    assert "parallelism" not in build()["spec"]["jobTemplate"]["spec"]
    cj = build(process={"parallelism": 3})
    assert cj["spec"]["jobTemplate"]["spec"]["parallelism"] == 3


def test_the_applied_hash_changes_with_the_spec_only() -> None:
    first, again = build(), build()
    assert first["metadata"]["annotations"][APPLIED_HASH] == again["metadata"]["annotations"][
        APPLIED_HASH]
    other = build(successfulJobsHistoryLimit=5)
    assert other["metadata"]["annotations"][APPLIED_HASH] != first["metadata"]["annotations"][
        APPLIED_HASH]


def test_server_defaults_are_not_drift_but_hand_edits_are() -> None:
    desired = build()
    actual = copy.deepcopy(desired)
    actual["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    actual["metadata"]["labels"]["added-by-hand"] = "yes"
    actual["status"] = {"lastScheduleTime": "2026-01-01T00:00:00Z"}
    assert not drifted(desired, actual)
    actual["spec"]["schedule"] = "0 * * * *"
    assert drifted(desired, actual)
    actual = copy.deepcopy(desired)
    pod = actual["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    assert drifted(desired, actual)


def test_owner_reference_makes_ownership() -> None:
    cj = build()
    assert is_owned_by(cj, "uid-1")
    assert not is_owned_by(cj, "uid-2")
    assert not is_owned_by({"metadata": {"ownerReferences": [{"uid": "uid-1"}]}}, "uid-1")


def test_quantities_are_written_in_the_servers_spelling() -> None:
    (container,) = pod_of(build(resources={"requests": {"cpu": "1000m", "memory": "0.5Gi"},
                                           "limits": {"memory": 1073741824, "cpu": "+1"}}))[
        "containers"]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "512Mi"},
                                      "limits": {"memory": "1073741824", "cpu": "+1"}}


def test_empty_env_values_are_left_out_as_the_server_does() -> None:
    (container,) = pod_of(build(env=[{"name": "EMPTY", "value": ""},
                                     {"name": "FULL", "value": "x"}]))["containers"]
    assert container["env"][1:] == [{"name": "EMPTY"}, {"name": "FULL", "value": "x"}]
