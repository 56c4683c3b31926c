"""One reconciliation of a CronTask, decided by pure functions.

The controller (``controller``) reads the world from its caches into an ``Observed``, asks
``plan_cronjob`` what to do with the CronJob, does it, and asks ``desired_status`` for the
status (and events) that follow from what it saw and what happened. Neither function does I/O,
raises, or depends on anything but its arguments: running them twice on the same world gives
the same answer, which is what makes the whole reconcile idempotent.

Every refusal (an invalid spec or schedule, a deadline beyond recover's threshold, a CronJob
the API server rejects, any reason added later) is handled the same way: Ready=False with the
reason, and an existing CronJob is suspended until the spec is fixed, so a configuration the
operator refuses never keeps running. A retired task deletes its CronJob instead.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from crontask_contract.redact import redact, redact_value
from crontask_operator import conditions, schedule, status
from crontask_operator.conditions import READY, Condition
from crontask_operator.cronjob import APPLIED_HASH, JobDefaults, Manifest, Owner, build_cronjob
from crontask_operator.drift import drifted, is_owned_by
from crontask_operator.outcomes import (
    FAILED,
    MAX_COUNT,
    JobResult,
    PodResult,
    Run,
    clean,
    rfc3339,
    run_of,
    settled,
)
from crontask_operator.spec import CronTaskSpec, SpecError, parse_spec
from crontask_operator.validation import DELETE, Refusal, Timing, resolve

NONE: Final = "none"
CREATE: Final = "create"
APPLY: Final = "apply"
SUSPEND: Final = "suspend"
REMOVE: Final = "delete"
CONFLICT: Final = "conflict"
MAX_CONDITION_MESSAGE: Final = 2048


@dataclass(frozen=True)
class Observed:
    """What the controller's caches hold for one CronTask."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    resource_version: str | None
    """The version of the CronTask this world was read from (the status write's precondition)."""
    spec: Any
    status: Mapping[str, Any]
    cronjob: Mapping[str, Any] | None = None
    jobs: tuple[JobResult, ...] = ()
    """Every Job carrying the CronTask's label: cached, and deleted ones seen finishing."""
    existing_jobs: frozenset[str] = frozenset()
    """UIDs of those Jobs (the complete cache's and the recently deleted ones')."""
    pods: tuple[PodResult, ...] = ()
    recover_stale: int | None = None
    tombstones: frozenset[str] = frozenset()
    """UIDs of the Jobs above that are gone from the cluster (their last watched state)."""


@dataclass(frozen=True)
class CronJobPlan:
    action: str
    manifest: Manifest | None = None
    refusal: Refusal | None = None
    timing: Timing | None = None
    kind: str = ""
    """created, updated or repaired (a CronJob edited or deleted by hand)."""


@dataclass(frozen=True)
class CronJobOutcome:
    """What became of the plan."""

    cronjob: Mapping[str, Any] | None
    """Our CronJob as it now is (after a write), or None when there is none."""
    rejected: str | None = None
    """The API server's message when it refused the CronJob."""
    conflict: bool = False


@dataclass(frozen=True)
class Event:
    type: str
    reason: str
    message: str


@dataclass(frozen=True)
class StatusDecision:
    status: dict[str, Any]
    events: tuple[Event, ...] = ()
    new_runs: tuple[Run, ...] = ()
    requeue_after: float | None = None
    """Seconds after which to look again (a run's pods still reporting, a Job on its way)."""
    missed_job: str | None = None


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ready_was_true(current: Mapping[str, Any]) -> bool:
    cond = conditions.find(_conditions(current), READY) or {}
    return cond.get("status") == "True"


def _conditions(current: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    value = current.get("conditions")
    return [c for c in value if isinstance(c, Mapping)] if isinstance(value, list) else []


Check = Callable[[CronTaskSpec, JobDefaults], Refusal | None]
"""An extra policy on a valid spec (e.g. an image allow-list): a Refusal to refuse it. A refusal
from a check is treated like every other one (Ready=False, the CronJob suspended)."""


def decide(obs: Observed, now: dt.datetime, job_defaults: JobDefaults | None = None,
           checks: Sequence[Check] = ()) -> Timing | Refusal:
    """The spec's timing, or why there is none. Never raises."""
    try:
        spec = parse_spec(obs.spec)
    except SpecError as exc:
        return Refusal("InvalidSpec", clean(f"invalid spec: {exc}", 1024) or "invalid spec")
    decision = resolve(obs.name, spec, now, obs.recover_stale)
    if isinstance(decision, Refusal):
        return decision
    for check in checks:
        refusal = check(spec, job_defaults or JobDefaults())
        if refusal is not None:
            return refusal
    return decision


def plan_cronjob(obs: Observed, job_defaults: JobDefaults, now: dt.datetime,
                 checks: Sequence[Check] = ()) -> CronJobPlan:
    """What to do with the CronJob."""
    actual = obs.cronjob
    if actual is not None and not is_owned_by(actual, obs.uid):
        # sample-controller's rule: a child we do not control is reported, never taken over.
        return CronJobPlan(CONFLICT)
    decision = decide(obs, now, job_defaults, checks)
    if isinstance(decision, Refusal):
        if decision.action == DELETE:
            return CronJobPlan(REMOVE if actual is not None else NONE, refusal=decision)
        suspended = bool(((actual or {}).get("spec") or {}).get("suspend"))
        if actual is not None and not suspended:
            return CronJobPlan(SUSPEND, refusal=decision)
        return CronJobPlan(NONE, refusal=decision)
    spec = parse_spec(obs.spec)  # valid: decide() got this far
    desired = build_cronjob(Owner(obs.name, obs.namespace, obs.uid), spec, decision, job_defaults)
    if actual is None:
        repaired = bool(obs.status.get("cronJobName")) and _ready_was_true(obs.status)
        return CronJobPlan(CREATE, desired, timing=decision,
                           kind="repaired" if repaired else "created")
    if drifted(desired, actual):
        ours = desired["metadata"]["annotations"][APPLIED_HASH]
        theirs = ((actual.get("metadata") or {}).get("annotations") or {}).get(APPLIED_HASH)
        by_hand = ours == theirs and _ready_was_true(obs.status)
        return CronJobPlan(APPLY, desired, timing=decision,
                           kind="repaired" if by_hand else "updated")
    return CronJobPlan(NONE, timing=decision)


def _ready(obs: Observed, plan: CronJobPlan, outcome: CronJobOutcome) -> Condition:
    name = obs.name
    if plan.action == CONFLICT or outcome.conflict:
        return Condition(READY, "False", "CronJobConflict",
                         f"a CronJob named {name} exists and is not controlled by this CronTask;"
                         " it is left alone: delete or rename it")
    exists = outcome.cronjob is not None
    held = (f" CronJob {name} is suspended until the spec is fixed." if exists
            else " No CronJob runs until the spec is fixed.")
    if plan.refusal is not None:
        if plan.refusal.action == DELETE:
            return Condition(READY, "False", plan.refusal.reason, plan.refusal.message)
        return Condition(READY, "False", plan.refusal.reason,
                         clean(plan.refusal.message.rstrip(".") + "." + held,
                               MAX_CONDITION_MESSAGE) or plan.refusal.reason)
    if outcome.rejected is not None:
        return Condition(READY, "False", "CronJobRejected", clean(
            f"the API server refused the CronJob: {outcome.rejected}".rstrip(".") + "." + held,
            MAX_CONDITION_MESSAGE) or "CronJobRejected")
    if plan.timing is not None and plan.timing.warnings:
        return Condition(READY, "True", "CronJobReadyWithWarnings",
                         clean("; ".join(plan.timing.warnings), MAX_CONDITION_MESSAGE) or "")
    return Condition(READY, "True", "CronJobReady", f"CronJob {name} is in sync")


def _next_schedule(obs: Observed, now: dt.datetime) -> str | None:
    try:
        spec = parse_spec(obs.spec)
        if spec.suspend:
            return None
        return timestamp(schedule.next_slot(spec.schedule, spec.time_zone, now))
    except (SpecError, schedule.ScheduleError):
        return None


def _announce(run: Run) -> Event:
    """One event per finished run: Warning for a failure or stage errors, Normal otherwise."""
    if run.outcome == FAILED:
        return Event("Warning", "RunFailed",
                     f"run {run.job_name} failed ({run.reason}): {run.message or ''}".strip())
    if run.stage_error_count:
        detail = "; ".join(f"{s}: {e.count} (last: {e.last_message})"
                           for s, e in sorted(run.stage_errors.items()))
        return Event("Warning", "StageErrors",
                     f"run {run.job_name} had {run.stage_error_count} stage error(s): " + detail)
    why = f" ({run.reason})" if run.reason else ""
    return Event("Normal", f"Run{run.outcome}", f"run {run.job_name} {run.outcome.lower()}{why}")


def _runs(obs: Observed, now: dt.datetime) -> tuple[list[Run], float | None]:
    runs: list[Run] = []
    wait: float | None = None
    for job in obs.jobs:
        if not job.is_run or not job.finished:
            continue
        run = run_of(job, obs.pods, now)
        if run is not None:
            runs.append(run)
        elif not settled(job, obs.pods, now):
            wait = 5.0 if wait is None else min(wait, 5.0)
    return runs, wait


def _seen_jobs(obs: Observed, cronjob: Mapping[str, Any] | None) -> set[str]:
    seen = {j.name for j in obs.jobs} | status.known_job_names(obs.status)
    active = ((cronjob or {}).get("status") or {}).get("active")
    for ref in active if isinstance(active, list) else ():
        if isinstance(ref, Mapping) and isinstance(ref.get("name"), str):
            seen.add(ref["name"])
    return seen


def desired_status(obs: Observed, plan: CronJobPlan, outcome: CronJobOutcome,
                   now: dt.datetime) -> StatusDecision:
    """The status that follows from the world and from what became of the plan."""
    current = dict(obs.status)
    events: list[Event] = []
    new = dict(current)
    if obs.generation is not None:
        new["observedGeneration"] = obs.generation
    ready = _ready(obs, plan, outcome)
    ready = replace(ready, message=redact(ready.message))  # compared with the stored, masked one
    before = conditions.find(_conditions(current), READY) or {}
    if (before.get("status"), before.get("reason"), before.get("message")) != (
            ready.status, ready.reason, ready.message) and (
            ready.status == "False" or ready.reason == "CronJobReadyWithWarnings"):
        events.append(Event("Warning", ready.reason, ready.message))
    if plan.kind == "repaired" and outcome.cronjob is not None and outcome.rejected is None:
        how = "deleted" if plan.action == CREATE else "changed"
        events.append(Event("Warning", "DriftRepaired",
                            f"CronJob {obs.name} was {how} by hand; restored from the spec"))
    stamp = timestamp(now)
    conds = conditions.set_condition(_conditions(current), ready, obs.generation, stamp)
    if ready.status == "True":
        new["cronJobName"] = obs.name
        new.pop("nextScheduleTime", None)
        upcoming = _next_schedule(obs, now)
        if upcoming is not None:
            new["nextScheduleTime"] = upcoming
    else:
        new.pop("nextScheduleTime", None)

    requeue: float | None = None
    missed_job: str | None = None
    cronjob = None if plan.action == CONFLICT or outcome.conflict else outcome.cronjob
    if cronjob is not None:
        scheduled = rfc3339((cronjob.get("status") or {}).get("lastScheduleTime"))
        check = status.missed_run(rfc3339(current.get("lastScheduleTime")), scheduled, obs.name,
                                  _seen_jobs(obs, cronjob), now)
        if check.watermark is not None:
            new["lastScheduleTime"] = check.watermark
        if check.missed_job is not None:
            missed_job = check.missed_job
            before_missed = current.get("missedRuns")
            before_missed = before_missed if type(before_missed) is int else 0
            new["missedRuns"] = min(MAX_COUNT, max(0, before_missed) + 1)
            events.append(Event(
                "Warning", "RunsMissed",
                f"the CronJob started {check.missed_job} but its Job was gone before the operator"
                " saw it finish (the operator was down longer than the Job was kept); its outcome"
                " is not counted"))
        if check.recheck_after is not None:
            requeue = check.recheck_after

    runs, wait = _runs(obs, now)
    if wait is not None:
        requeue = wait if requeue is None else min(requeue, wait)
    folded = status.fold_runs(new, runs, obs.existing_jobs)
    new = folded.status
    events.extend(_announce(run) for run in folded.new_runs)
    last = new.get("lastRun") if isinstance(new.get("lastRun"), Mapping) else None
    conds = conditions.set_condition(conds, status.healthy(last), obs.generation, stamp)
    new["conditions"] = conds
    # The one place every status value and event passes: whatever a pod, a Job or the API
    # server put in a message, nothing shaped like a credential reaches the CronTask (readable
    # by far more people than the Secrets such text may come from). Idempotent, so a status
    # already masked compares equal and a no-op reconcile still writes nothing.
    new = redact_value(new)
    events = [Event(e.type, e.reason, clean(e.message, 1024) or "") for e in events]
    return StatusDecision(new, tuple(events), folded.new_runs, requeue, missed_job)


__all__ = ["CronJobOutcome", "CronJobPlan", "Event", "Observed", "StatusDecision",
           "desired_status", "plan_cronjob"]
