"""The desired CronJob of a CronTask: a pure function from spec to manifest.

Everything that makes a run safe is decided here, in one place a unit test can read: the
hardened pod, the termination message carrying the run report, the deadlines that keep runs
from overlapping or outliving recover's threshold, and the labels that tie every Job and Pod
back to its CronTask.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from crontask_operator import defaults, names, quantities
from crontask_operator.spec import CronTaskSpec
from crontask_operator.validation import Timing

Manifest = dict[str, Any]
APPLIED_HASH: Final = f"{names.GROUP}/applied-hash"
"""Annotation on the CronJob: a hash of the manifest last applied, so that a changed spec is
applied even when it only removes a field (a subset test cannot see a removal)."""
JOB_UID = 65532
"""The non-root user of the jobs image."""
START_ERROR_EXIT_CODE: Final = 128
"""The exit code the kubelet gives a container the runtime could not start (reason
StartError); the jobs CLI never exits with it (its codes are 0-3, and a signal gives 128+N)."""


def pod_failure_policy() -> Manifest:
    """Pod failures that are not the run's own: the pod is replaced within the same run, and
    ``backoffLimit`` (the retries of a run that failed) is not spent on them.

    - The container never started (the runtime failed to create it: a cgroup freeze, a
      failed mount). No code of the run ran, so a second pod is exactly a first attempt. The
      Job controller waits 10 s, 20 s, 40 s ... between pods; one that can never start ends
      at ``activeDeadlineSeconds``, and the run's message names the start error.
    - The pod was disrupted (``DisruptionTarget``: evicted, preempted, its node drained or
      shut down). The pod stopped as on any SIGTERM, every job leaves the database as a
      next run expects (decay resumes exactly the rest, recover rolled back or committed,
      process handed its claims back), so the replacement finishes the same run.

    Everything else (the run's own exit codes, a kill, OOM) counts as a failure, as before.
    """
    return {"rules": [
        {"action": "Ignore", "onExitCodes": {"containerName": names.CONTAINER_NAME,
                                             "operator": "In",
                                             "values": [START_ERROR_EXIT_CODE]}},
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget",
                                                  "status": "True"}]},
    ]}


@dataclass(frozen=True)
class JobDefaults:
    """What a CronTask does not say about its pods: the operator's flags decide."""

    image: str = defaults.JOB_IMAGE
    image_pull_policy: str = defaults.JOB_IMAGE_PULL_POLICY
    requests: Mapping[str, str] = field(default_factory=lambda: dict(defaults.JOB_REQUESTS))
    limits: Mapping[str, str] = field(default_factory=lambda: dict(defaults.JOB_LIMITS))


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
        if p.get("workers") is not None:
            args += ["--workers", str(p["workers"])]
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
        kind: {name: quantities.canonical(q, resource_list=True) for name, q in amounts.items()}
        for kind, amounts in (("requests", spec.resources.get("requests") or defaults.requests),
                              ("limits", spec.resources.get("limits") or defaults.limits))
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
        "podFailurePolicy": pod_failure_policy(),
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
    manifest: Manifest = {
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
    manifest["metadata"]["annotations"] = {APPLIED_HASH: manifest_hash(manifest)}
    return manifest


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """A short, stable digest of what the operator applies (its own annotation left out)."""
    meta = {k: v for k, v in manifest["metadata"].items() if k != "annotations"}
    text = json.dumps({**manifest, "metadata": meta}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
