"""Every default and every bound of the operator side, in one table.

The CRD generator (``crd``) writes these into the schema's ``default``/``minimum``/``maximum``
keywords, the spec parser (``spec``) applies the same values to objects stored before a default
existed, the flags (``config``) and the job pod defaults (``cronjob.JobDefaults``) start from
them, and a unit test checks the Helm chart's ``values.yaml`` against them: a default is written
here once and nowhere else. Plain data, no imports of our own, so anything may depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final

TIME_ZONE: Final = "Etc/UTC"
"""Schedules are read in an explicit zone, never in the controller manager's local time."""
DATABASE_KEY: Final = "url"

SPEC: Final[Mapping[str, Any]] = MappingProxyType({
    "timeZone": TIME_ZONE,
    "suspend": False,
    "concurrencyPolicy": "Forbid",
    "successfulJobsHistoryLimit": 3,
    "failedJobsHistoryLimit": 3,
    "backoffLimit": 0,
    "logLevel": "INFO",
})
"""Top-level CronTask spec fields with a default."""

TASK_PARAMS: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType({
    "recover": MappingProxyType({"staleAfter": "30m", "abandonedAfter": "2h"}),
    "decay": MappingProxyType({"window": "50m"}),
    "process": MappingProxyType({
        "idleAfter": "15m",
        "batchSize": 10,
        "maxConcurrentPipelines": 10,
        "parallelism": 1,
        "stageTimeout": "60s",
        "recoverStaleAfter": "30m",
    }),
})
"""Each task's own block (spec.recover, spec.decay, spec.process)."""

JOB_UNSET: Final[Mapping[str, Mapping[str, Any]]] = MappingProxyType({
    "decay": MappingProxyType({"maxDecayPerRun": 10, "workers": 2}),
})
"""What the job does with a parameter the CronTask leaves unset (the operator passes no flag,
so the job's own default applies): stated in the CRD's descriptions, and held equal to the jobs
CLI's defaults by a unit test, since the operator may not import the jobs' code."""

JOB_IMAGE: Final = "crontask-jobs:dev"
JOB_IMAGE_PULL_POLICY: Final = "IfNotPresent"
JOB_REQUESTS: Final[Mapping[str, str]] = MappingProxyType({"cpu": "50m", "memory": "128Mi"})
JOB_LIMITS: Final[Mapping[str, str]] = MappingProxyType({"memory": "256Mi"})

RESYNC_SECONDS: Final = 300.0
"""The safety resync of each CronTask (jittered); events do the real work."""
RESYNC_JITTER: Final = 0.2
"""Each resync is drawn from interval * (1 +- jitter), so CronTasks never resync in step."""
WORKERS: Final = 4
"""Reconciles running at once (each is mostly waiting on the API server)."""
LEASE_NAME: Final = "crontask-operator"
LEASE_DURATION_SECONDS: Final = 15.0
"""Leader election (client-go's and kube-controller-manager's defaults): a candidate takes over
this long after the leader's last renewal, as seen on the candidate's clock."""
RENEW_DEADLINE_SECONDS: Final = 10.0
"""The leader stops acting this long after its last successful renewal."""
RETRY_PERIOD_SECONDS: Final = 2.0
METRICS_PORT: Final = 8080
HEALTH_PORT: Final = 8081
LOG_FORMAT: Final = "json"
LOG_LEVEL: Final = "INFO"

# Bounds the CRD enforces, and the reasons for them.
MAX_RECENT_RUNS: Final = 10
MIN_HISTORY_LIMIT: Final = 1
"""At least the newest finished Job of each kind stays, so a restarted operator finds it."""
MAX_HISTORY_LIMIT: Final = 10
MIN_TTL_SECONDS: Final = 300
"""A finished Job lives at least 5 minutes: long enough for an operator restart to see it."""
MAX_TTL_SECONDS: Final = 2_592_000
MAX_COUNTED_JOBS: Final = 100
"""status.countedJobs holds the UIDs of counted Jobs that still exist: at most both history
limits plus Jobs waiting for deletion, far below this."""
MAX_BACKOFF_LIMIT: Final = 10
MIN_STARTING_DEADLINE: Final = 10
MAX_STARTING_DEADLINE: Final = 86_400
MAX_ACTIVE_DEADLINE: Final = 604_800
MAX_QUANTITY_CHARS: Final = 40
MAX_DURATION: Final = "87600h"
"""Ten years: longer thresholds and windows make no sense for these tasks, and CEL's
duration() (in the CRD's cross-field rules) overflows not far beyond."""
