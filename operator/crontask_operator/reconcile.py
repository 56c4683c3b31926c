"""One reconciliation of a CronTask: decide with the pure functions, then do the little I/O.

Both the change handlers (create/update/resume) and the periodic resync call ``sync``; it reads
the world (the CronJob, the indexed Jobs and Pods), decides, applies what differs, and writes
the status through Kopf's ``patch.status``, touching only fields that change. Running it twice
in a row does nothing the second time.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import kopf

from crontask_contract.redact import redact, redact_value
from crontask_operator import conditions, names, schedule, status
from crontask_operator.conditions import READY, Condition
from crontask_operator.cronjob import JobDefaults, Owner, build_cronjob, drifted, is_owned_by
from crontask_operator.events import Events, KopfEvents
from crontask_operator.images import AllowList
from crontask_operator.kube import Kube, Rejected
from crontask_operator.metrics import Metrics
from crontask_operator.outcomes import FAILED, JobResult, PodResult, Run, run_of
from crontask_operator.spec import CronTaskSpec, parse_spec
from crontask_operator.validation import Refusal, Timing, resolve


class CronJobs(Protocol):
    async def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def apply_cronjob(self, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def delete_cronjob(self, namespace: str, name: str, uid: str) -> bool: ...
    async def suspend_cronjob(self, namespace: str, name: str, uid: str) -> bool: ...


@dataclass
class Context:
    """What every reconciliation needs: set once at startup."""

    kube: CronJobs | Kube
    defaults: JobDefaults
    metrics: Metrics
    events: Events = field(default_factory=KopfEvents)
    allowed_images: AllowList = field(
        default_factory=lambda: AllowList.parse((), names.DEFAULT_IMAGE))


def timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _set(patch: kopf.Patch, current: Mapping[str, Any], key: str, value: Any) -> None:
    """Patch one status field, only if it changes (None removes it).

    Every status write passes here, so this is where anything shaped like a credential is
    masked (``crontask_contract.redact``): messages come from pods, Jobs and the API server,
    and the status is readable by many more people than the Secrets such text may come from.
    """
    value = redact_value(value)
    if current.get(key) != value:
        patch.status[key] = value


def _ready(ctx: Context, patch: kopf.Patch, body: kopf.Body, current: Mapping[str, Any],
           cond: Condition, generation: int | None, now: dt.datetime) -> None:
    """Set Ready; a new False (or a new warning) becomes one Warning event, not one per resync."""
    cond = replace(cond, message=redact(cond.message))  # compared with the stored, masked one
    before = conditions.find(current.get("conditions") or [], READY) or {}
    changed = (before.get("status"), before.get("reason"), before.get("message")) != (
        cond.status, cond.reason, cond.message)
    if changed and (cond.status == "False" or cond.reason == "CronJobReadyWithWarnings"):
        ctx.events.warn(body, cond.reason, cond.message)
    new = conditions.set_condition(current.get("conditions") or [], cond, generation,
                                   timestamp(now))
    _set(patch, current, "conditions", new)


async def sync(ctx: Context, *, body: kopf.Body, patch: kopf.Patch, now: dt.datetime,
               namespace_recover_stale: int | None, trigger: str,
               logger: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
    """Bring the CronJob in line with the spec and report the result as Ready."""
    meta, current = body.metadata, dict(body.status or {})
    name, namespace, uid = str(meta.name), str(meta.namespace), str(meta.uid)
    generation = meta.get("generation")
    _set(patch, current, "observedGeneration", generation)
    try:
        spec = parse_spec(body.spec)
        decision: Timing | Refusal = resolve(name, spec, now, namespace_recover_stale,
                                             ctx.allowed_images)
    except (KeyError, TypeError, ValueError) as exc:
        decision = Refusal("InvalidSpec", f"invalid spec: {exc}")

    if isinstance(decision, Refusal):
        ctx.metrics.errors.labels(decision.reason).inc()
        ctx.metrics.reconciles.labels(trigger, "refused").inc()
        if decision.delete_cronjob:
            actual = await ctx.kube.get_cronjob(namespace, name)
            if actual is not None and is_owned_by(actual, uid):
                await ctx.kube.delete_cronjob(namespace, name, str(actual["metadata"]["uid"]))
                logger.info("deleted CronJob %s: %s", name, decision.message)
        elif decision.suspend_cronjob:
            actual = await ctx.kube.get_cronjob(namespace, name)
            if (actual is not None and is_owned_by(actual, uid)
                    and not (actual.get("spec") or {}).get("suspend")):
                await ctx.kube.suspend_cronjob(namespace, name, str(actual["metadata"]["uid"]))
                logger.info("suspended CronJob %s (%s)", name, decision.reason)
        refused = Condition(READY, "False", decision.reason, decision.message)
        _ready(ctx, patch, body, current, refused, generation, now)
        _set(patch, current, "nextScheduleTime", None)
        return

    desired = build_cronjob(Owner(name, namespace, uid), spec, decision, ctx.defaults)
    actual = await ctx.kube.get_cronjob(namespace, name)
    if actual is not None and not is_owned_by(actual, uid):
        # sample-controller's rule: a child we do not control is reported, never taken over.
        ctx.metrics.errors.labels("CronJobConflict").inc()
        ctx.metrics.reconciles.labels(trigger, "conflict").inc()
        _ready(ctx, patch, body, current, Condition(
            READY, "False", "CronJobConflict",
            f"a CronJob named {name} exists and is not controlled by this CronTask;"
            " it is left alone: delete or rename it"), generation, now)
        return
    if actual is None or drifted(desired, actual):
        try:
            applied = await ctx.kube.apply_cronjob(desired)
        except Rejected as exc:
            ctx.metrics.errors.labels("Rejected").inc()
            ctx.metrics.reconciles.labels(trigger, "rejected").inc()
            _ready(ctx, patch, body, current, Condition(
                READY, "False", "CronJobRejected",
                f"the API server refused the CronJob: {exc.message}"), generation, now)
            return
        kind = "created" if actual is None else "updated"
        if actual is not None and trigger == "resync" and (
                applied["metadata"].get("resourceVersion")
                != actual["metadata"].get("resourceVersion")):
            kind = "repaired"
            ctx.events.warn(body, "DriftRepaired",
                            f"CronJob {name} was changed by hand; restored from the spec")
        elif actual is None and current.get("cronJobName"):
            kind = "repaired"
            ctx.events.warn(body, "DriftRepaired",
                            f"CronJob {name} was deleted by hand; recreated from the spec")
        ctx.metrics.applies.labels(kind).inc()
        logger.info("CronJob %s %s", name, kind)
        actual = applied
    ctx.metrics.reconciles.labels(trigger, "ok").inc()

    if decision.warnings:
        ready = Condition(READY, "True", "CronJobReadyWithWarnings", "; ".join(decision.warnings))
    else:
        ready = Condition(READY, "True", "CronJobReady", f"CronJob {name} is in sync")
    _ready(ctx, patch, body, current, ready, generation, now)
    _set(patch, current, "cronJobName", name)
    scheduled = _rfc3339((actual.get("status") or {}).get("lastScheduleTime"))
    _set(patch, current, "lastScheduleTime", scheduled or current.get("lastScheduleTime"))
    _set(patch, current, "nextScheduleTime", _next(spec, now))


def _rfc3339(value: Any) -> str | None:
    """A time as Kubernetes writes it (the API client hands back datetimes or ISO strings)."""
    if isinstance(value, dt.datetime):
        return timestamp(value)
    if isinstance(value, str) and value:
        try:
            return timestamp(dt.datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return value
    return None


def _next(spec: CronTaskSpec, now: dt.datetime) -> str | None:
    if spec.suspend:
        return None
    try:
        return timestamp(schedule.next_slot(spec.schedule, spec.time_zone, now))
    except schedule.ScheduleError:
        return None


def fold(ctx: Context, *, body: kopf.Body, patch: kopf.Patch, now: dt.datetime,
         jobs: Iterable[JobResult], pods: Iterable[PodResult]) -> tuple[Run, ...]:
    """Fold the CronTask's finished Jobs into its status; events and metrics for new runs."""
    current = dict(body.status or {})
    pod_list = list(pods)
    runs = [r for r in (run_of(j, pod_list, now) for j in jobs) if r is not None]
    folded = status.fold_runs(current, runs)
    task = str(body.spec.get("task", ""))
    namespace = str(body.metadata.namespace)
    for key, value in folded.fields.items():
        _set(patch, current, key, value)
    for run in folded.new_runs:
        ctx.metrics.runs.labels(namespace, task, run.outcome).inc()
        for stage, errors in run.stage_errors.items():
            ctx.metrics.stage_errors.labels(namespace, task, stage).inc(errors.count)
        _announce(ctx.events, body, run)
    last = folded.fields.get("lastRun", current.get("lastRun"))
    health = status.healthy(last)
    generation = body.metadata.get("generation")
    merged = {**current, **{k: v for k, v in patch.get("status", {}).items()}}
    new = conditions.set_condition(merged.get("conditions") or [], health, generation,
                                   timestamp(now))
    _set(patch, current, "conditions", new)
    return folded.new_runs


def _announce(events: Events, body: kopf.Body, run: Run) -> None:
    """One event per finished run: Warning for a failure or stage errors, Normal otherwise."""
    if run.outcome == FAILED:
        events.warn(body, "RunFailed",
                    f"run {run.job_name} failed ({run.reason}): {run.message or ''}".strip())
    elif run.stage_error_count:
        detail = "; ".join(f"{s}: {e.count} (last: {e.last_message})"
                           for s, e in sorted(run.stage_errors.items()))
        events.warn(body, "StageErrors",
                    f"run {run.job_name} had {run.stage_error_count} stage error(s): " + detail)
    else:
        why = f" ({run.reason})" if run.reason else ""
        events.normal(body, f"Run{run.outcome}",
                      f"run {run.job_name} {run.outcome.lower()}{why}")


__all__ = ["Context", "fold", "sync"]
