"""Names the operator shares with the cluster: API group, labels, annotation prefixes.

Kept in one dependency-free module so that the CRD generator, the CronJob builder, the handlers
and the tests agree on every string without importing each other.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "crontask.dev"
VERSION: Final = "v1alpha1"
KIND: Final = "CronTask"
PLURAL: Final = "crontasks"
SINGULAR: Final = "crontask"
SHORT_NAMES: Final = ("ct",)
CATEGORIES: Final = ("all", "crontask")
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

FIELD_MANAGER: Final = "crontask-operator"
"""The server-side-apply field manager: owns exactly the CronJob fields the operator sets."""
LEGACY_FINALIZER: Final = f"{GROUP}/finalizer"
"""The finalizer operators before the event-driven one put on CronTasks (see chart README)."""
KOPF_FINALIZER: Final = f"{GROUP}/kopf-finalizer"
"""The finalizer name Kopf is configured with. No handler makes Kopf set one; it is distinct from
LEGACY_FINALIZER so that Kopf never tries to remove that one either (it has no RBAC to)."""
ANNOTATION_PREFIX: Final = GROUP
"""Kopf's progress and diff-base annotations live under our own prefix, never kopf.zalando.org."""

LABEL_CRONTASK: Final = f"{GROUP}/crontask"
"""On the CronJob, its Jobs and their Pods: the name of the owning CronTask."""
LABEL_TASK: Final = f"{GROUP}/task"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "crontask-operator"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"
LEGACY_JOB_NAME_LABEL: Final = "job-name"

CONTAINER_NAME: Final = "crontask-job"
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
JOB_ENTRYPOINT: Final = "/opt/crontask/bin/crontask-job"

MAX_NAME_LENGTH: Final = 52
"""The CronJob controller appends an 11-character suffix to make Job names (63 max)."""

