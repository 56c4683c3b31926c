"""What a finished Job did, read from Kubernetes objects alone.

The operator never asks the database: a run's outcome comes from the run report its pod wrote to
the termination message, and when a pod was killed before it could write one (OOMKilled,
DeadlineExceeded, ...), from the container state and the Job's conditions. The functions here
turn Job and Pod bodies into small frozen values (what the caches keep) and those values into a
``Run``; none of them does I/O, and none raises: every field is checked for its type and
clipped to a bound, so whatever a Job or Pod carries, the status built from it fits the CRD.
A termination message that is not a valid run report makes the run Failed (InvalidReport).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from crontask_contract.redact import redact
from crontask_contract.report import (
    ReportError,
    RunReport,
    RunStatus,
    StageErrors,
    StageTiming,
    decode,
)
from crontask_operator import names, schemacheck

REPORT_GRACE_SECONDS: Final = 20
"""How long after a Job finished to wait for its pods' final state before folding without it.

Jobs and Pods arrive on separate watch streams; the Pod's terminated state can lag the Job's
Complete condition by a moment."""
NEVER_STARTED: Final = frozenset({"StartError", "ContainerCannotRun"})
"""Terminated reasons of a container the runtime could not start (containerd and CRI-O say
StartError, Docker said ContainerCannotRun)."""
NOT_A_REPORT: Final = NEVER_STARTED | {"ContainerStatusUnknown"}
"""Terminated reasons whose message the runtime or the kubelet wrote, not the container: a
container that never started, and one the kubelet lost track of ("The container could not be
located when the pod was deleted")."""

EXIT_REASONS: Final = {1: "RunFailed", 2: "ConfigurationError", 3: "DatabaseUnreachable"}
"""The jobs CLI's exit codes, for a pod that left no readable report."""

SUCCEEDED: Final = "Succeeded"
SKIPPED: Final = "Skipped"
FAILED: Final = "Failed"
INVALID_REPORT: Final = "InvalidReport"

MAX_NAME: Final = 253
MAX_REASON: Final = 256
MAX_MESSAGE: Final = 1024
MAX_ENTRIES: Final = 64
MAX_COUNT: Final = 2**63 - 1
MAX_MS: Final = 1e15
MAX_TERMINATION_MESSAGE: Final = 16 * 1024


def clean(value: Any, limit: int) -> str | None:
    """A string fit for status: None unless a string; valid Unicode; credential-shaped parts
    masked (before clipping: a cut could leave half a password no shape recognises); at most
    ``limit`` characters."""
    if not isinstance(value, str):
        return None
    text = redact(value.encode("utf-8", "replace").decode("utf-8"))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rfc3339(value: Any) -> str | None:
    """A Kubernetes time (``2026-01-05T12:00:00Z``), or None for anything that is not one."""
    if not isinstance(value, str) or len(value) > 64 or not schemacheck.is_rfc3339(value):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")
                                           .replace("t", "T"))
        if parsed.tzinfo is None:
            return None
        return parsed.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (ValueError, OverflowError):
        return None


def _int(value: Any) -> int | None:
    return value if type(value) is int and -(2**31) <= value < 2**31 else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _controller(meta: Mapping[str, Any]) -> tuple[str, str, str]:
    refs = meta.get("ownerReferences")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, Mapping) and ref.get("controller") is True:
            return (str(clean(ref.get("kind"), 64) or ""), str(clean(ref.get("name"), 253) or ""),
                    str(clean(ref.get("uid"), 64) or ""))
    return "", "", ""


@dataclass(frozen=True)
class PodResult:
    """The part of a job pod that tells how its run ended."""

    name: str
    job_name: str
    created: str
    uid: str = ""
    job_uid: str = ""
    """The Job that controls the pod (its owner reference)."""
    terminated: bool = False
    exit_code: int | None = None
    reason: str | None = None
    """The container's terminated reason: Completed, Error, OOMKilled, ..."""
    message: str | None = None
    """The termination message: the run report, when the job got to write it."""
    finished_at: str | None = None
    runtime_message: str | None = None
    """What the runtime or the kubelet wrote where the termination message would be (reasons
    in NOT_A_REPORT): for a container that never started, why; no code of the run ran."""


@dataclass(frozen=True)
class JobResult:
    """A Job of a CronTask; ``finished`` once it has a Complete or Failed condition."""

    name: str
    namespace: str
    crontask: str
    uid: str = ""
    controller_kind: str = ""
    controller_name: str = ""
    finished: bool = False
    failed: bool = False
    reason: str | None = None
    message: str | None = None
    start_time: str | None = None
    completion_time: str | None = None

    @property
    def is_run(self) -> bool:
        """A run of the CronTask: a Job its CronJob controls (scheduled, or created with
        ``kubectl create job --from=cronjob/...``). Jobs that only copy the labels are not."""
        return self.controller_kind == "CronJob" and self.controller_name == self.crontask


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
    job_uid: str = ""

    @property
    def stage_error_count(self) -> int:
        return min(MAX_COUNT, sum(e.count for e in self.stage_errors.values()))


def pod_result(body: Mapping[str, Any]) -> PodResult:
    meta = _mapping(body.get("metadata"))
    labels = _mapping(meta.get("labels"))
    job = labels.get(names.JOB_NAME_LABEL) or labels.get(names.LEGACY_JOB_NAME_LABEL)
    statuses = _mapping(body.get("status")).get("containerStatuses")
    statuses = [s for s in statuses if isinstance(s, Mapping)] if isinstance(statuses, list) \
        else []
    mine = [s for s in statuses if s.get("name") == names.CONTAINER_NAME] or statuses[:1]
    terminated = _mapping(_mapping(mine[0].get("state")).get("terminated")) if mine else {}
    kind, _, owner_uid = _controller(meta)
    message = terminated.get("message")
    not_a_report = terminated.get("reason") in NOT_A_REPORT
    return PodResult(
        name=clean(meta.get("name"), MAX_NAME) or "",
        job_name=clean(job, MAX_NAME) or "",
        created=rfc3339(meta.get("creationTimestamp")) or "",
        uid=clean(meta.get("uid"), 64) or "",
        job_uid=owner_uid if kind == "Job" else "",
        terminated=bool(terminated),
        exit_code=_int(terminated.get("exitCode")),
        reason=clean(terminated.get("reason"), MAX_REASON),
        message=message[:MAX_TERMINATION_MESSAGE + 1]
        if isinstance(message, str) and not not_a_report else None,
        finished_at=rfc3339(terminated.get("finishedAt")),
        runtime_message=clean(message, MAX_MESSAGE) if not_a_report else None,
    )


def job_result(body: Mapping[str, Any]) -> JobResult:
    meta = _mapping(body.get("metadata"))
    status = _mapping(body.get("status"))
    conditions = status.get("conditions")
    final = {c.get("type"): c for c in (conditions if isinstance(conditions, list) else ())
             if isinstance(c, Mapping) and c.get("type") in ("Complete", "Failed")
             and c.get("status") == "True"}
    failed = "Failed" in final
    cond = final.get("Failed") or final.get("Complete") or {}
    kind, owner, _ = _controller(meta)
    return JobResult(
        name=clean(meta.get("name"), MAX_NAME) or "",
        namespace=clean(meta.get("namespace"), MAX_NAME) or "",
        crontask=clean(_mapping(meta.get("labels")).get(names.LABEL_CRONTASK), MAX_NAME) or "",
        uid=clean(meta.get("uid"), 64) or "",
        controller_kind=kind,
        controller_name=owner,
        finished=bool(final),
        failed=failed,
        reason=clean(cond.get("reason"), MAX_REASON),
        message=clean(cond.get("message"), MAX_MESSAGE),
        start_time=rfc3339(status.get("startTime")),
        completion_time=(rfc3339(status.get("completionTime"))
                         or rfc3339(cond.get("lastTransitionTime"))),
    )


@dataclass(frozen=True)
class _Reports:
    valid: list[RunReport]
    invalid: list[tuple[PodResult, str]]


def _reports(pods: Sequence[PodResult]) -> _Reports:
    out = _Reports([], [])
    for pod in pods:
        if pod.message:
            try:
                out.valid.append(decode(pod.message))
            except ReportError as exc:
                out.invalid.append((pod, str(exc)))
    return out


def _bounded(merged: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(merged.items())[:MAX_ENTRIES])


def merge_reports(reports: Sequence[RunReport]) -> tuple[dict[str, int], dict[str, StageErrors],
                                                         dict[str, StageTiming], bool]:
    """Add up what every pod of a Job did (retries and parallel pods did real work each).

    Sums saturate at int64 and at most MAX_ENTRIES keys of each kind are kept (the last flag
    says something was cut), so any set of reports fits the status schema."""
    counts: dict[str, int] = {}
    errors: dict[str, StageErrors] = {}
    timings: dict[str, StageTiming] = {}
    for report in reports:
        for key, n in report.counts.items():
            counts[key] = min(MAX_COUNT, counts.get(key, 0) + n)
        for stage, e in report.stage_errors.items():
            before = errors.get(stage)
            errors[stage] = StageErrors(min(MAX_COUNT, (before.count if before else 0) + e.count),
                                        clean(e.last_message, MAX_MESSAGE) or "")
        for stage, t in report.stage_timings.items():
            b = timings.get(stage)
            timings[stage] = t if b is None else StageTiming(
                min(MAX_COUNT, b.count + t.count), min(MAX_MS, b.total_ms + t.total_ms),
                max(b.max_ms, t.max_ms))
    cut = any(len(d) > MAX_ENTRIES for d in (counts, errors, timings))
    return _bounded(counts), _bounded(errors), _bounded(timings), cut


def _killed(pods: Sequence[PodResult]) -> tuple[str | None, str | None]:
    """The reason and message of the last pod that died without a readable report."""
    for pod in reversed(pods):
        if not pod.terminated:
            continue
        code = pod.exit_code
        if pod.runtime_message:
            return pod.reason, (f"pod {pod.name}: {pod.reason} (exit code {code}):"
                                f" {pod.runtime_message}")
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
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def _pod_order(pod: PodResult) -> tuple[Any, ...]:
    return (pod.created, pod.name, pod.uid, pod.finished_at or "", pod.exit_code or 0,
            pod.reason or "", pod.message or "", pod.terminated)


def settled(job: JobResult, pods: Iterable[PodResult], now: dt.datetime) -> bool:
    """Whether a finished Job's outcome can be read now: its pods have all ended, or the grace
    for their final state to arrive is over."""
    mine = [p for p in pods if p.job_name == job.name and (not p.job_uid or not job.uid
                                                            or p.job_uid == job.uid)]
    if mine and all(p.terminated for p in mine):
        return True
    finished = _parse_time(job.completion_time)
    return finished is None or (now - finished).total_seconds() >= REPORT_GRACE_SECONDS


def run_of(job: JobResult, pods: Iterable[PodResult], now: dt.datetime) -> Run | None:
    """The Run a finished Job stands for, or None while it is not (yet) known.

    None for a Job still running, and for a finished one whose pods' final state has not arrived
    yet (for up to REPORT_GRACE_SECONDS): folding too early would record a report-less outcome.
    The result depends on the set of pods, not on their order.
    """
    if not job.finished:
        return None
    pod_list = list(pods)
    ordered = sorted((p for p in pod_list if p.job_name == job.name
                      and (not p.job_uid or not job.uid or p.job_uid == job.uid)), key=_pod_order)
    reports = _reports(ordered)
    if not reports.valid and not settled(job, ordered, now):
        return None

    counts, errors, timings, cut = merge_reports(reports.valid)
    last = reports.valid[-1] if reports.valid else None
    failed_reports = [r for r in reports.valid if r.status is RunStatus.FAILED]
    start = job.start_time or (rfc3339(last.started_at) if last else None)
    base = Run(
        job_name=job.name, job_uid=job.uid, outcome=SUCCEEDED, start_time=start,
        completion_time=job.completion_time,
        execution_id=clean(last.execution_id, MAX_REASON) if last else None, counts=counts,
        stage_errors=errors, stage_timings=timings,
        truncated=cut or any(r.truncated for r in reports.valid),
    )
    if reports.invalid:
        pod, why = reports.invalid[-1]
        return replace(base, outcome=FAILED, reason=INVALID_REPORT,
                       message=clean(f"pod {pod.name} wrote a termination message that is not a"
                                     f" run report: {why}", MAX_MESSAGE))
    if job.failed:
        reason, message = _failure(job, ordered, failed_reports)
        return replace(base, outcome=FAILED, reason=clean(reason, MAX_REASON),
                       message=clean(message, MAX_MESSAGE))
    if reports.valid and all(r.status is RunStatus.SKIPPED for r in reports.valid):
        return replace(base, outcome=SKIPPED, reason=clean(last.reason, MAX_REASON)
                       if last else None)
    if not reports.valid:
        return replace(base, reason="NoReport",
                       message="the job's pods left no readable run report")
    return base


def _failure(job: JobResult, pods: Sequence[PodResult],
             failed_reports: Sequence[RunReport]) -> tuple[str, str | None]:
    """The most specific reason a failed Job has: its deadline, the report, the kill, the Job."""
    killed_reason, killed_message = _killed(pods)
    if job.reason == "DeadlineExceeded":
        deadline = job.message or "the run exceeded activeDeadlineSeconds"
        # A pod that could not start is retried until the deadline: say why it never ran.
        if killed_reason in NEVER_STARTED and killed_message:
            return job.reason, f"{deadline}; {killed_message}"
        return job.reason, deadline
    if failed_reports:
        return failed_reports[-1].reason or "RunFailed", failed_reports[-1].error or job.message
    if killed_reason:
        return killed_reason, killed_message
    return job.reason or "RunFailed", killed_message or job.message
