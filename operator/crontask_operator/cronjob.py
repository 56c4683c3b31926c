"""The desired CronJob of a CronTask: a pure function from spec to manifest.

Everything that makes a run safe is decided here, in one place a unit test can read: the
hardened pod, the termination message carrying the run report, the deadlines that keep runs
from overlapping or outliving recover's threshold, and the labels that tie every Job and Pod
back to its CronTask.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from crontask_operator import names
from crontask_operator.spec import CronTaskSpec
from crontask_operator.validation import Timing

Manifest = dict[str, Any]
JOB_UID = 65532
"""The non-root user of the jobs image."""


@dataclass(frozen=True)
class JobDefaults:
    """What a CronTask does not say about its pods: the operator's flags decide."""

    image: str = names.DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    requests: Mapping[str, str] = field(
        default_factory=lambda: {"cpu": "50m", "memory": "128Mi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"memory": "256Mi"})


@dataclass(frozen=True)
class Owner:
    """The CronTask a CronJob belongs to."""

    name: str
    namespace: str
    uid: str


def labels(owner_name: str, task: str) -> dict[str, str]:
    """On the CronJob, its Job template and its Pod template: every run is traceable."""
    return {
        names.LABEL_NAME: "crontask-job",
        names.LABEL_INSTANCE: owner_name,
        names.LABEL_COMPONENT: task,
        names.LABEL_PART_OF: "crontask",
        names.LABEL_MANAGED_BY: names.MANAGED_BY,
        names.LABEL_CRONTASK: owner_name,
        names.LABEL_TASK: task,
    }


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {
        "apiVersion": f"{names.GROUP}/{names.VERSION}",
        "kind": names.KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def task_args(spec: CronTaskSpec) -> list[str]:
    """The ``crontask-job TASK [options]`` part of the command line, per the jobs CLI contract."""
    p = spec.params
    args = [spec.task]
    if spec.task == "recover":
        args += ["--stale-after", str(p["staleAfter"]),
                 "--abandoned-after", str(p["abandonedAfter"])]
    elif spec.task == "decay":
        args += ["--window", str(p["window"])]
        if p.get("maxDecayPerRun") is not None:
            args += ["--max-decay-per-run", str(p["maxDecayPerRun"])]
    elif spec.task == "process":
        args += ["--idle-after", str(p["idleAfter"]), "--batch-size", str(p["batchSize"]),
                 "--max-concurrent-pipelines", str(p["maxConcurrentPipelines"])]
        if p.get("maxInFlight") is not None:
            args += ["--max-in-flight", str(p["maxInFlight"])]
        args += ["--stage-timeout", str(p["stageTimeout"])]
        for stage, timeout in sorted((p.get("stageTimeouts") or {}).items()):
            args += ["--stage-timeout", f"{stage}={timeout}"]
        if p.get("pipeline"):
            args += ["--pipeline", str(p["pipeline"])]
    return args


def container(spec: CronTaskSpec, defaults: JobDefaults) -> Manifest:
    env: list[Manifest] = [{
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": spec.database.name, "key": spec.database.key}},
    }]
    env += [dict(e) for e in spec.env]
    resources = {
        "requests": dict(spec.resources.get("requests") or defaults.requests),
        "limits": dict(spec.resources.get("limits") or defaults.limits),
    }
    return {
        "name": names.CONTAINER_NAME,
        "image": spec.image or defaults.image,
        "imagePullPolicy": spec.image_pull_policy or defaults.image_pull_policy,
        "command": [names.JOB_ENTRYPOINT],
        "args": ["--report-file", names.TERMINATION_MESSAGE_PATH, "--log-format", "json",
                 "--log-level", spec.log_level, *task_args(spec)],
        "env": env,
        "resources": {k: v for k, v in resources.items() if v},
        # A report, not a log tail: FallbackToLogsOnError would let a log line pose as one.
        "terminationMessagePath": names.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "File",
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - an emptyDir
    }


def build_cronjob(owner: Owner, spec: CronTaskSpec, timing: Timing,
                  defaults: JobDefaults) -> Manifest:
    """The complete CronJob for a valid CronTask (``validation.resolve`` gave ``timing``)."""
    tags = labels(owner.name, spec.task)
    job_spec: Manifest = {
        "activeDeadlineSeconds": timing.active_deadline_seconds,
        "backoffLimit": spec.backoff_limit,
        "template": {
            "metadata": {"labels": dict(tags)},
            "spec": {
                "restartPolicy": "Never",
                # The job talks to PostgreSQL only: no API credentials in its pod.
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": JOB_UID,
                    "runAsGroup": JOB_UID,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [container(spec, defaults)],
                "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
            },
        },
    }
    if spec.task == "process" and int(spec.params.get("parallelism", 1)) > 1:
        job_spec["parallelism"] = int(spec.params["parallelism"])
    if spec.ttl_seconds_after_finished is not None:
        job_spec["ttlSecondsAfterFinished"] = spec.ttl_seconds_after_finished
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": owner.name,
            "namespace": owner.namespace,
            "labels": tags,
            "ownerReferences": [owner_reference(owner)],
        },
        "spec": {
            "schedule": spec.schedule,
            "timeZone": spec.time_zone,
            "suspend": spec.suspend,
            "concurrencyPolicy": spec.concurrency_policy,
            "startingDeadlineSeconds": timing.starting_deadline_seconds,
            "successfulJobsHistoryLimit": spec.successful_jobs_history_limit,
            "failedJobsHistoryLimit": spec.failed_jobs_history_limit,
            "jobTemplate": {"metadata": {"labels": dict(tags)}, "spec": job_spec},
        },
    }


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIX: Mapping[str, Decimal] = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    **{f"{p}i": Decimal(1024) ** (i + 1) for i, p in enumerate("KMGTPE")},
}


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes resource quantity as a number, or None if it is not one.

    The API server rewrites quantities into canonical form (``1000m`` becomes ``1``,
    ``0.5Gi`` becomes ``512Mi``), so resources must be compared by value, or every resync
    would see drift that is not there.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    match = _QUANTITY.match(str(value).strip())
    if match is None:
        return None
    number, suffix = Decimal(match.group(1)), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _SUFFIX[suffix]


def _same_resources(desired: Mapping[str, Any], actual: Any) -> bool:
    """``requests``/``limits`` maps, their quantities compared by value."""
    def same(wanted: Any, have: Any) -> bool:
        ours = parse_quantity(wanted)
        return bool(wanted == have) or (ours is not None and ours == parse_quantity(have))

    def same_kind(wanted: Any, have: Any) -> bool:
        if not isinstance(wanted, Mapping):  # e.g. resources.claims, a list
            return is_subset(wanted, have)
        return isinstance(have, Mapping) and all(same(q, have.get(r)) for r, q in wanted.items())

    return isinstance(actual, Mapping) and all(
        same_kind(wanted, actual.get(kind)) for kind, wanted in desired.items())


def is_subset(desired: Any, actual: Any) -> bool:
    """Whether every field we set has our value in ``actual`` (the server adds defaults).

    Lists must match in length and element-wise; maps may have extra keys; resource quantities
    compare by value. This is the drift test: a hand edit of any field we own shows here, a
    server-filled default or a canonicalised quantity does not.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and (_same_resources(v, actual[k]) if k == "resources"
                             and isinstance(v, Mapping) else is_subset(v, actual[k]))
            for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and len(desired) == len(actual) and all(
            is_subset(d, a) for d, a in zip(desired, actual, strict=True))
    return bool(desired == actual)


def drifted(desired: Manifest, actual: Mapping[str, Any]) -> bool:
    """The CronJob in the cluster no longer matches what we would apply."""
    meta = actual.get("metadata") or {}
    return not (is_subset(desired["spec"], actual.get("spec"))
                and is_subset(desired["metadata"]["labels"], meta.get("labels") or {}))


def is_owned_by(actual: Mapping[str, Any], uid: str) -> bool:
    refs = (actual.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)
