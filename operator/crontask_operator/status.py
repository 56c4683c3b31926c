"""Folding finished runs into a CronTask's status: pure, idempotent, order-independent, bounded.

Every run is counted exactly once, forever. A run is known by its Job's UID; ``countedJobs``
lists the UIDs of counted Jobs that still exist, so a Job that the history limits keep is never
counted again, whatever the limits, across operator restarts; and a Job deleted after it was
counted simply leaves the list. A Job is only dropped from the list once the operator's complete
cache no longer has it, so the list stays as long as the Jobs it protects, and no longer.

A run whose Job was deleted before the operator saw it finish (the operator was down longer than
the Job was kept) cannot be counted; the CronJob's ``lastScheduleTime`` still shows that it was
started, and ``missed_run`` turns that into ``missedRuns`` and a Warning, so the status never
silently pretends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from crontask_operator import defaults
from crontask_operator.conditions import HEALTHY, Condition
from crontask_operator.outcomes import FAILED, MAX_COUNT, SKIPPED, SUCCEEDED, Run, clean

COUNTER: Final[Mapping[str, str]] = {SUCCEEDED: "succeededRuns", SKIPPED: "skippedRuns",
                                     FAILED: "failedRuns"}
MISSED_GRACE_SECONDS: Final = 60
"""How long after a scheduled run's slot its Job may still be on its way through the watch."""


def run_summary(run: Run) -> dict[str, Any]:
    """The short form kept in ``recentRuns``."""
    out: dict[str, Any] = {"jobName": run.job_name, "outcome": run.outcome,
                           "stageErrorCount": run.stage_error_count}
    for key, value in (("reason", run.reason), ("startTime", run.start_time),
                       ("completionTime", run.completion_time)):
        if value is not None:
            out[key] = value
    return out


def run_detail(run: Run) -> dict[str, Any]:
    """The full form kept in ``lastRun``: counts, stage errors and stage timings."""
    out = run_summary(run)
    if run.message is not None:
        out["message"] = run.message
    if run.execution_id is not None:
        out["executionId"] = run.execution_id
    out["counts"] = dict(run.counts)
    out["stageErrors"] = {stage: {"count": e.count, "lastMessage": e.last_message}
                          for stage, e in sorted(run.stage_errors.items())}
    out["stageTimings"] = {stage: {"count": t.count, "totalMs": round(t.total_ms, 1),
                                   "maxMs": round(t.max_ms, 1)}
                           for stage, t in sorted(run.stage_timings.items())}
    if run.truncated:
        out["truncated"] = True
    return out


def known_job_names(status: Mapping[str, Any]) -> set[str]:
    recent = status.get("recentRuns")
    seen = {str(r.get("jobName")) for r in (recent if isinstance(recent, list) else ())
            if isinstance(r, Mapping)}
    last = status.get("lastRun")
    if isinstance(last, Mapping) and last.get("jobName"):
        seen.add(str(last["jobName"]))
    return seen


def counted(status: Mapping[str, Any], run: Run) -> bool:
    """Whether ``run`` is already in the counters. Before ``countedJobs`` existed (a status
    written by an older operator), the Job names in recentRuns and lastRun are the record."""
    uids = status.get("countedJobs")
    if isinstance(uids, list):
        return run.job_uid in uids
    return run.job_name in known_job_names(status)


@dataclass(frozen=True)
class Folded:
    """The whole new status, and the runs that were new (for events and metrics)."""

    status: dict[str, Any]
    new_runs: tuple[Run, ...]


def _later(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _run_order(run: Run) -> tuple[str, str, str]:
    return (run.completion_time or "", run.job_name, run.job_uid)


def fold_runs(status: Mapping[str, Any], runs: Iterable[Run],
              existing_jobs: Collection[str]) -> Folded:
    """Add the runs not counted before to ``status``.

    ``existing_jobs``: UIDs of the CronTask's Jobs that still exist (from a complete cache);
    ``countedJobs`` keeps exactly the counted ones among them. Folding the same runs again, or in
    another order, gives the same status.
    """
    out = dict(status)
    unique = {r.job_uid or r.job_name: r
              for r in sorted(runs, key=lambda r: (_run_order(r), repr(r)))}
    new = sorted((r for r in unique.values() if not counted(status, r)), key=_run_order)
    counters = {k: _counter(status.get(k)) for k in COUNTER.values()}
    recent = [dict(r) for r in status.get("recentRuns") or [] if isinstance(r, Mapping)]
    last = dict(status.get("lastRun") or {})
    success, failure = status.get("lastSuccessfulTime"), status.get("lastFailureTime")
    for run in new:
        counters[COUNTER[run.outcome]] = min(MAX_COUNT, counters[COUNTER[run.outcome]] + 1)
        recent.append(run_summary(run))
        if not last or (run.completion_time or "") >= str(last.get("completionTime") or ""):
            last = run_detail(run)
        if run.outcome == FAILED:
            failure = _later(failure, run.completion_time)
        else:
            success = _later(success, run.completion_time)
    if new:
        recent.sort(key=lambda r: (str(r.get("completionTime") or ""), str(r.get("jobName"))),
                    reverse=True)
        out.update(counters)
        out["recentRuns"] = recent[: defaults.MAX_RECENT_RUNS]
        out["lastRun"] = last
        if success is not None:
            out["lastSuccessfulTime"] = success
        if failure is not None:
            out["lastFailureTime"] = failure
    before = status.get("countedJobs")
    if isinstance(before, list):
        keep = {u for u in before if isinstance(u, str)}
    else:  # migrate: the Jobs an older operator recorded by name
        names = known_job_names(status)
        keep = {r.job_uid for r in unique.values() if r.job_name in names}
    keep |= {r.job_uid for r in new}
    out["countedJobs"] = sorted(u for u in keep if u and u in existing_jobs)[
        : defaults.MAX_COUNTED_JOBS]
    return Folded(out, tuple(new))


def _counter(value: Any) -> int:
    return value if type(value) is int and 0 <= value <= MAX_COUNT else 0


def scheduled_job_name(cronjob: str, scheduled: dt.datetime) -> str:
    """The name the CronJob controller gives the Job of a scheduled time (minutes since the
    epoch), as in pkg/controller/cronjob/utils.go ``getJobName``."""
    return f"{cronjob}-{int(scheduled.timestamp()) // 60}"


@dataclass(frozen=True)
class MissedCheck:
    watermark: str | None
    """The newest scheduled time accounted for (status.lastScheduleTime)."""
    missed_job: str | None = None
    """The Job the CronJob started and the operator never saw."""
    recheck_after: float | None = None
    """Seconds until the question can be answered (the Job may still be on its way)."""


def missed_run(watermark: str | None, last_schedule: str | None, cronjob: str,
               seen_jobs: Collection[str], now: dt.datetime) -> MissedCheck:
    """Did the CronJob start a run whose Job the operator never saw?

    ``last_schedule`` is the CronJob's status.lastScheduleTime; ``seen_jobs`` the names of every
    Job of the CronTask in the cache (running or not), the recently deleted ones the operator
    saw, the recorded runs and the CronJob's active list. A scheduled time newer than the
    watermark whose Job is in none of them, once a grace has passed, is a missed run. Only the
    newest scheduled time is visible, so the count is a lower bound.
    """
    if last_schedule is None:
        return MissedCheck(watermark)
    if watermark is not None and last_schedule <= watermark:
        return MissedCheck(watermark)
    if watermark is None:  # first sight of this CronJob's history: nothing to compare with
        return MissedCheck(last_schedule)
    scheduled = dt.datetime.fromisoformat(last_schedule.replace("Z", "+00:00"))
    name = scheduled_job_name(cronjob, scheduled)
    if name in seen_jobs:
        return MissedCheck(last_schedule)
    age = (now - scheduled).total_seconds()
    if age < MISSED_GRACE_SECONDS:
        return MissedCheck(watermark, recheck_after=MISSED_GRACE_SECONDS - age)
    return MissedCheck(last_schedule, missed_job=name)


def stage_error_text(stage_errors: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(f"{stage}: {e.get('count')} error(s), last: {e.get('lastMessage')}"
                     for stage, e in sorted(stage_errors.items()))


def healthy(last_run: Mapping[str, Any] | None) -> Condition:
    """Healthy: the last run succeeded (or was rightly skipped) without stage errors."""
    if not last_run:
        return Condition(HEALTHY, "Unknown", "NoRunYet", "no run has finished yet")
    job = last_run.get("jobName")
    outcome = last_run.get("outcome")
    if outcome == FAILED:
        why = last_run.get("reason") or "RunFailed"
        detail = last_run.get("message") or ""
        return Condition(HEALTHY, "False", "RunFailed", clean(
            f"run {job} failed ({why}){': ' + detail if detail else ''}", 2048) or "")
    if int(last_run.get("stageErrorCount") or 0) > 0:
        return Condition(HEALTHY, "False", "StageErrors", clean(
            f"run {job} had stage errors: " + stage_error_text(last_run.get("stageErrors") or {}),
            2048) or "")
    if outcome == SKIPPED:
        return Condition(HEALTHY, "True", "RunSkipped",
                         f"run {job} was skipped ({last_run.get('reason') or 'no reason given'})")
    return Condition(HEALTHY, "True", "RunSucceeded", f"run {job} succeeded")
