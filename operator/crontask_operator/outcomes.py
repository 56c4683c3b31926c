"""What a finished Job did, read from Kubernetes objects alone.

The operator never asks the database: a run's outcome comes from the run report its pod wrote to
the termination message, and when a pod was killed before it could write one (OOMKilled,
DeadlineExceeded, ...), from the container state and the Job's conditions. The functions here
turn Job and Pod bodies into small frozen values (what the Kopf indexes keep) and those values
into a ``Run``; none of them does I/O.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from crontask_contract.report import (
    ReportError,
    RunReport,
    RunStatus,
    StageErrors,
    StageTiming,
    decode,
)
from crontask_operator import names

REPORT_GRACE_SECONDS: Final = 20
"""How long after a Job finished to wait for its pods' final state before folding without it.

Jobs and Pods arrive on separate watch streams; the Pod's terminated state can lag the Job's
Complete condition by a moment."""

EXIT_REASONS: Final = {1: "RunFailed", 2: "ConfigurationError", 3: "DatabaseUnreachable"}
"""The jobs CLI's exit codes, for a pod that left no readable report."""

SUCCEEDED: Final = "Succeeded"
SKIPPED: Final = "Skipped"
FAILED: Final = "Failed"


@dataclass(frozen=True)
class PodResult:
    """The part of a job pod that tells how its run ended."""

    name: str
    job_name: str
    created: str
    terminated: bool = False
    exit_code: int | None = None
    reason: str | None = None
    """The container's terminated reason: Completed, Error, OOMKilled, ..."""
    message: str | None = None
    """The termination message: the run report, when the job got to write it."""
    finished_at: str | None = None


@dataclass(frozen=True)
class JobResult:
    """A Job of a CronTask; ``finished`` once it has a Complete or Failed condition."""

    name: str
    namespace: str
    crontask: str
    finished: bool = False
    failed: bool = False
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None


@dataclass(frozen=True)
class Run:
    """One finished run, as the status shows it."""

    job_name: str
    outcome: str
    start_time: str | None
    completion_time: str | None
    reason: str | None = None
    message: str | None = None
    execution_id: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    stage_errors: Mapping[str, StageErrors] = field(default_factory=dict)
    stage_timings: Mapping[str, StageTiming] = field(default_factory=dict)
    truncated: bool = False

    @property
    def stage_error_count(self) -> int:
        return sum(e.count for e in self.stage_errors.values())


def pod_result(body: Mapping[str, Any]) -> PodResult:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    job = labels.get(names.JOB_NAME_LABEL) or labels.get(names.LEGACY_JOB_NAME_LABEL) or ""
    statuses = (body.get("status") or {}).get("containerStatuses") or []
    mine = [s for s in statuses if s.get("name") == names.CONTAINER_NAME] or statuses[:1]
    terminated = ((mine[0].get("state") or {}).get("terminated") if mine else None) or {}
    return PodResult(
        name=str(meta.get("name", "")),
        job_name=str(job),
        created=str(meta.get("creationTimestamp") or ""),
        terminated=bool(terminated),
        exit_code=terminated.get("exitCode"),
        reason=terminated.get("reason"),
        message=terminated.get("message"),
        finished_at=terminated.get("finishedAt"),
    )


def job_result(body: Mapping[str, Any]) -> JobResult:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    final = {c.get("type"): c for c in status.get("conditions") or []
             if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"}
    failed = "Failed" in final
    cond = final.get("Failed") or final.get("Complete") or {}
    return JobResult(
        name=str(meta.get("name", "")),
        namespace=str(meta.get("namespace", "")),
        crontask=str((meta.get("labels") or {}).get(names.LABEL_CRONTASK, "")),
        finished=bool(final),
        failed=failed,
        reason=cond.get("reason"),
        message=cond.get("message"),
        start_time=status.get("startTime"),
        completion_time=status.get("completionTime") or cond.get("lastTransitionTime"),
    )


def _reports(pods: Sequence[PodResult]) -> list[RunReport]:
    out = []
    for pod in pods:
        if pod.message:
            try:
                out.append(decode(pod.message))
            except ReportError:
                continue
    return out


def merge_reports(reports: Sequence[RunReport]) -> tuple[dict[str, int], dict[str, StageErrors],
                                                         dict[str, StageTiming]]:
    """Add up what every pod of a Job did (retries and parallel pods did real work each)."""
    counts: dict[str, int] = {}
    errors: dict[str, StageErrors] = {}
    timings: dict[str, StageTiming] = {}
    for report in reports:
        for key, n in report.counts.items():
            counts[key] = counts.get(key, 0) + n
        for stage, e in report.stage_errors.items():
            before = errors.get(stage)
            errors[stage] = StageErrors((before.count if before else 0) + e.count, e.last_message)
        for stage, t in report.stage_timings.items():
            b = timings.get(stage)
            timings[stage] = t if b is None else StageTiming(
                b.count + t.count, b.total_ms + t.total_ms, max(b.max_ms, t.max_ms))
    return counts, errors, timings


def _killed(pods: Sequence[PodResult]) -> tuple[str | None, str | None]:
    """The reason and message of the last pod that died without a readable report."""
    for pod in reversed(pods):
        if not pod.terminated:
            continue
        code = pod.exit_code
        if pod.reason and pod.reason not in ("Error", "Completed"):
            return pod.reason, f"pod {pod.name}: {pod.reason} (exit code {code})"
        if code in EXIT_REASONS:
            return EXIT_REASONS[code], f"pod {pod.name} exited with code {code} and no run report"
        if code:
            return None, f"pod {pod.name} exited with code {code} and no run report"
    return None, None


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def run_of(job: JobResult, pods: Iterable[PodResult], now: dt.datetime) -> Run | None:
    """The Run a finished Job stands for, or None while it is not (yet) known.

    None for a Job still running, and for a finished one whose pods' final state has not arrived
    yet (for up to REPORT_GRACE_SECONDS): folding too early would record a report-less outcome.
    """
    if not job.finished:
        return None
    ordered = sorted((p for p in pods if p.job_name == job.name), key=lambda p: (p.created, p.name))
    reports = _reports(ordered)
    if not reports:
        settled = bool(ordered) and all(p.terminated for p in ordered)
        finished = _parse_time(job.completion_time)
        waited = finished is None or (now - finished).total_seconds() >= REPORT_GRACE_SECONDS
        if not (settled or waited):
            return None

    counts, errors, timings = merge_reports(reports)
    last = reports[-1] if reports else None
    failed_reports = [r for r in reports if r.status is RunStatus.FAILED]
    start = job.start_time or (last.started_at if last else None)
    base = Run(
        job_name=job.name, outcome=SUCCEEDED, start_time=start,
        completion_time=job.completion_time,
        execution_id=last.execution_id if last else None, counts=counts,
        stage_errors=errors, stage_timings=timings,
        truncated=any(r.truncated for r in reports),
    )
    if job.failed:
        reason, message = _failure(job, ordered, failed_reports)
        return replace(base, outcome=FAILED, reason=reason, message=message)
    if reports and all(r.status is RunStatus.SKIPPED for r in reports):
        return replace(base, outcome=SKIPPED, reason=last.reason if last else None)
    if not reports:
        return replace(base, reason="NoReport",
                       message="the job's pods left no readable run report")
    return base


def _failure(job: JobResult, pods: Sequence[PodResult],
             failed_reports: Sequence[RunReport]) -> tuple[str, str | None]:
    """The most specific reason a failed Job has: its deadline, the report, the kill, the Job."""
    killed_reason, killed_message = _killed(pods)
    if job.reason == "DeadlineExceeded":
        return job.reason, job.message or "the run exceeded activeDeadlineSeconds"
    if failed_reports:
        return failed_reports[-1].reason or "RunFailed", failed_reports[-1].error or job.message
    if killed_reason:
        return killed_reason, killed_message
    return job.reason or "RunFailed", killed_message or job.message
