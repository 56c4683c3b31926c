"""The CronTask spec as typed values, with the defaults the CRD declares applied again.

The API server applies the CRD's defaults before the operator ever sees an object; applying them
here as well keeps the pure functions total (a unit test can hand in a bare dict) and protects
against objects stored before a default was added to the schema.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crontask_operator.crd import DEFAULT_RECOVER_STALE_AFTER, DEFAULT_TIME_ZONE


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str = "url"


@dataclass(frozen=True)
class CronTaskSpec:
    """Everything the CronJob builder and the validation read from a CronTask's spec."""

    task: str
    schedule: str
    database: SecretKeyRef
    time_zone: str = DEFAULT_TIME_ZONE
    suspend: bool = False
    concurrency_policy: str = "Forbid"
    starting_deadline_seconds: int | None = None
    successful_jobs_history_limit: int = 3
    failed_jobs_history_limit: int = 3
    active_deadline_seconds: int | None = None
    backoff_limit: int = 0
    ttl_seconds_after_finished: int | None = None
    image: str | None = None
    image_pull_policy: str | None = None
    log_level: str = "INFO"
    resources: Mapping[str, Mapping[str, str | int]] = field(default_factory=dict)
    env: tuple[Mapping[str, Any], ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    """The task's own block (spec.recover, spec.decay or spec.process), defaults applied."""


TASK_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    "recover": {"staleAfter": "30m", "abandonedAfter": "2h"},
    "decay": {"window": "50m"},
    "process": {
        "idleAfter": "15m",
        "batchSize": 10,
        "maxConcurrentPipelines": 10,
        "parallelism": 1,
        "stageTimeout": "60s",
        "recoverStaleAfter": DEFAULT_RECOVER_STALE_AFTER,
    },
}


def _opt_int(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    return None if value is None else int(value)


def parse_spec(raw: Mapping[str, Any]) -> CronTaskSpec:
    """A CronTaskSpec from an object's ``spec``; KeyError/ValueError if required parts lack.

    The schema makes these errors impossible for objects that went through the API server.
    """
    task = str(raw["task"])
    db = raw["database"]["secretKeyRef"]
    block = raw.get(task) if task in TASK_DEFAULTS else None
    params = {**TASK_DEFAULTS.get(task, {}), **(block or {})}
    return CronTaskSpec(
        task=task,
        schedule=str(raw["schedule"]),
        database=SecretKeyRef(name=str(db["name"]), key=str(db.get("key") or "url")),
        time_zone=str(raw.get("timeZone") or DEFAULT_TIME_ZONE),
        suspend=bool(raw.get("suspend", False)),
        concurrency_policy=str(raw.get("concurrencyPolicy") or "Forbid"),
        starting_deadline_seconds=_opt_int(raw, "startingDeadlineSeconds"),
        successful_jobs_history_limit=int(raw.get("successfulJobsHistoryLimit", 3)),
        failed_jobs_history_limit=int(raw.get("failedJobsHistoryLimit", 3)),
        active_deadline_seconds=_opt_int(raw, "activeDeadlineSeconds"),
        backoff_limit=int(raw.get("backoffLimit", 0)),
        ttl_seconds_after_finished=_opt_int(raw, "ttlSecondsAfterFinished"),
        image=raw.get("image"),
        image_pull_policy=raw.get("imagePullPolicy"),
        log_level=str(raw.get("logLevel") or "INFO"),
        resources={k: dict(v) for k, v in (raw.get("resources") or {}).items()},
        env=tuple(dict(e) for e in raw.get("env") or ()),
        params=params,
    )
