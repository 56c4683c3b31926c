"""Folding finished runs into a CronTask's status: pure, idempotent, bounded.

Folding the same run twice changes nothing (a run is known by its Job's name, and every Job the
CronJob keeps is within ``recentRuns`` because the history limits are capped at its length), so
a restarted operator or a replayed watch event cannot double-count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crontask_operator import names
from crontask_operator.conditions import HEALTHY, Condition
from crontask_operator.outcomes import FAILED, SKIPPED, SUCCEEDED, Run

COUNTER: Mapping[str, str] = {SUCCEEDED: "succeededRuns", SKIPPED: "skippedRuns",
                              FAILED: "failedRuns"}


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


def known_jobs(status: Mapping[str, Any]) -> set[str]:
    seen = {str(r.get("jobName")) for r in status.get("recentRuns") or []}
    last = status.get("lastRun") or {}
    if last.get("jobName"):
        seen.add(str(last["jobName"]))
    return seen


@dataclass(frozen=True)
class Folded:
    """The status fields that changed, and the runs that were new (for events and metrics)."""

    fields: dict[str, Any]
    new_runs: tuple[Run, ...]


def _later(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def fold_runs(status: Mapping[str, Any], runs: Iterable[Run]) -> Folded:
    """Add the runs not seen before to ``status``; return only the fields that change."""
    seen = known_jobs(status)
    new = sorted((r for r in runs if r.job_name not in seen),
                 key=lambda r: (r.completion_time or "", r.job_name))
    if not new:
        return Folded({}, ())
    counters = {k: int(status.get(k) or 0) for k in COUNTER.values()}
    recent = [dict(r) for r in status.get("recentRuns") or []]
    last = dict(status.get("lastRun") or {})
    success, failure = status.get("lastSuccessfulTime"), status.get("lastFailureTime")
    for run in new:
        counters[COUNTER[run.outcome]] += 1
        recent.append(run_summary(run))
        if not last or (run.completion_time or "") >= str(last.get("completionTime") or ""):
            last = run_detail(run)
        if run.outcome == FAILED:
            failure = _later(failure, run.completion_time)
        else:
            success = _later(success, run.completion_time)
    recent.sort(key=lambda r: (str(r.get("completionTime") or ""), str(r.get("jobName"))),
                reverse=True)
    fields: dict[str, Any] = {**counters, "recentRuns": recent[: names.MAX_RECENT_RUNS],
                              "lastRun": last}
    if success is not None:
        fields["lastSuccessfulTime"] = success
    if failure is not None:
        fields["lastFailureTime"] = failure
    return Folded(fields, tuple(new))


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
        return Condition(HEALTHY, "False", "RunFailed",
                         f"run {job} failed ({why}){': ' + detail if detail else ''}")
    if int(last_run.get("stageErrorCount") or 0) > 0:
        return Condition(HEALTHY, "False", "StageErrors",
                         f"run {job} had stage errors: "
                         + stage_error_text(last_run.get("stageErrors") or {}))
    if outcome == SKIPPED:
        return Condition(HEALTHY, "True", "RunSkipped",
                         f"run {job} was skipped ({last_run.get('reason') or 'no reason given'})")
    return Condition(HEALTHY, "True", "RunSucceeded", f"run {job} succeeded")
