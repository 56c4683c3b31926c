"""Shared builders for the operator's unit tests (plain functions, no fixtures magic)."""

from __future__ import annotations

import datetime as dt
from typing import Any

NOW = dt.datetime(2026, 1, 5, 12, 0, 7, tzinfo=dt.UTC)


def crontask_spec(task: str = "process", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": task,
        "schedule": "*/5 * * * *",
        "database": {"secretKeyRef": {"name": "crontask-db"}},
    }
    spec.update(extra)
    return spec


def crontask(name: str = "process", task: str = "process", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "crontask.dev/v1alpha1",
        "kind": "CronTask",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": crontask_spec(task, **extra),
    }
