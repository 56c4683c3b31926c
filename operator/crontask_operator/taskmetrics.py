"""Per-CronTask metrics for alerting, read from the CronTask's own status.

The status is the record (every run folded exactly once, across restarts), so the metrics are a
pure function of it, not counters the process accumulates: a restarted or newly elected operator
exports exactly what its predecessor did, ``crontask_runs_total`` never goes back, and a deleted
CronTask's series are gone with it. Only the replica that reconciles (the leader) exports them,
so Prometheus sees each series once.

Cardinality is bounded: a fixed set of series per CronTask (``SERIES_PER_CRONTASK``), labelled
``namespace``, ``crontask`` and ``task`` (one of the CRD's task names, else ``unknown``), plus
``outcome`` with three values. Stage names, which come from pods, are never labels here.

``task_series`` takes what the API server sent (hostile like any outside input) and never
raises; every value it returns is a finite number.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from crontask_operator.outcomes import FAILED, SKIPPED, SUCCEEDED, rfc3339

TASKS: Final = ("recover", "decay", "process", "detect-stuck", "recover-stuck")
OUTCOMES: Final = (SUCCEEDED, SKIPPED, FAILED)
COUNTERS: Final[Mapping[str, str]] = {SUCCEEDED: "succeededRuns", SKIPPED: "skippedRuns",
                                      FAILED: "failedRuns"}
MAX_COUNT: Final = 2**63 - 1
SERIES_PER_CRONTASK: Final = 17
"""The most series one CronTask can have (every optional one present)."""


@dataclass(frozen=True)
class TaskSeries:
    """The values exported for one CronTask (None: the series is absent)."""

    namespace: str
    crontask: str
    task: str
    last_success: float | None = None
    last_failure: float | None = None
    last_run: float | None = None
    last_outcome: str | None = None
    last_stage_errors: int | None = None
    recent_runs: int = 0
    recent_runs_with_stage_errors: int = 0
    runs: Mapping[str, int] = field(default_factory=dict)
    missed_runs: int = 0
    interval: int | None = None
    created: float | None = None
    suspended: bool = False
    ready: bool | None = None

    @property
    def labels(self) -> tuple[str, str, str]:
        return (self.namespace, self.crontask, self.task)


def epoch(value: Any) -> float | None:
    """Seconds since the epoch of a Kubernetes time, or None for anything that is not one."""
    text = rfc3339(value)
    if text is None:
        return None
    try:
        seconds = dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.UTC).timestamp()
    except (ValueError, OverflowError):
        return None
    return seconds if math.isfinite(seconds) else None


def _count(value: Any) -> int:
    return value if type(value) is int and 0 <= value <= MAX_COUNT else 0


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _ready(status: Mapping[str, Any]) -> bool | None:
    conds = status.get("conditions")
    for cond in conds if isinstance(conds, list) else ():
        if isinstance(cond, Mapping) and cond.get("type") == "Ready":
            value = cond.get("status")
            return True if value == "True" else False if value == "False" else None
    return None


def task_series(namespace: str, name: str, crontask: Any,
                interval: int | None = None) -> TaskSeries:
    """The series of one CronTask (its metadata, spec and status as the API server has them)
    and its schedule's shortest interval in seconds (None when it has no valid schedule)."""
    body = _mapping(crontask)
    meta, spec, status = (_mapping(body.get(k)) for k in ("metadata", "spec", "status"))
    task = spec.get("task")
    last = _mapping(status.get("lastRun"))
    outcome = last.get("outcome") if last.get("outcome") in OUTCOMES else None
    recent = status.get("recentRuns")
    recent = [r for r in recent if isinstance(r, Mapping)] if isinstance(recent, list) else []
    return TaskSeries(
        namespace=namespace, crontask=name,
        task=task if isinstance(task, str) and task in TASKS else "unknown",
        last_success=epoch(status.get("lastSuccessfulTime")),
        last_failure=epoch(status.get("lastFailureTime")),
        last_run=epoch(last.get("completionTime")) if last else None,
        last_outcome=outcome,
        last_stage_errors=_count(last.get("stageErrorCount")) if outcome else None,
        recent_runs=len(recent),
        recent_runs_with_stage_errors=sum(1 for r in recent if _count(r.get("stageErrorCount"))),
        runs={o: _count(status.get(key)) for o, key in COUNTERS.items()},
        missed_runs=_count(status.get("missedRuns")),
        interval=interval if type(interval) is int and interval > 0 else None,
        created=epoch(meta.get("creationTimestamp")),
        suspended=spec.get("suspend") is True,
        ready=_ready(status),
    )
