"""The CronJob builder: hardened pods, the CLI contract, deadlines, labels, drift."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from operator_helpers import NOW, crontask_spec

from crontask_operator import names
from crontask_operator.cronjob import (
    JobDefaults,
    Owner,
    build_cronjob,
    drifted,
    is_owned_by,
    is_subset,
    parse_quantity,
    task_args,
)
from crontask_operator.images import AllowList
from crontask_operator.spec import parse_spec
from crontask_operator.validation import Timing, resolve

OWNER = Owner(name="process", namespace="ns", uid="uid-1")
ALLOWED = AllowList.parse(["registry.example/*"], default_image=names.DEFAULT_IMAGE)


def build(task: str = "process", **extra: Any) -> dict[str, Any]:
    spec = parse_spec(crontask_spec(task, **extra))
    timing = resolve(OWNER.name, spec, NOW, allowed_images=ALLOWED)
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


@pytest.mark.parametrize(("text", "value"), [
    ("1", "1"), ("1000m", "1"), ("250m", "0.25"), ("128Mi", "134217728"), ("0.5Gi", "536870912"),
    ("1k", "1000"), ("1e3", "1000"), (2, "2"), (".5", "0.5")])
def test_quantities_parse_by_value(text: str | int, value: str) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "-1", None, True, "1 Mi"])
def test_non_quantities_are_none(text: object) -> None:
    assert parse_quantity(text) is None


def test_canonicalised_quantities_are_not_drift() -> None:
    desired = {"resources": {"requests": {"cpu": "1000m", "memory": "0.5Gi"},
                             "limits": {"memory": "512Mi"}}}
    canonical = {"resources": {"requests": {"cpu": "1", "memory": "512Mi"},
                               "limits": {"memory": "512Mi"}}}
    edited = {"resources": {"requests": {"cpu": "2", "memory": "512Mi"},
                            "limits": {"memory": "512Mi"}}}
    missing = {"resources": {"requests": {"cpu": "1"}, "limits": {"memory": "512Mi"}}}
    assert is_subset(desired, canonical)
    assert not is_subset(desired, edited)
    assert not is_subset(desired, missing)
