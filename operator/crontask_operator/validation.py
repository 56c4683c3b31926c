"""Checks the schema cannot make, and the defaults that depend on the schedule.

One pure function, ``resolve``, turns a spec into either the concrete timing of its CronJob or a
refusal with a CamelCase reason and a message for humans. Refusals become Ready=False; they are
never raised to Kopf, so a bad spec costs one status patch, not a retry loop.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

from crontask_contract.durations import duration_seconds, format_duration
from crontask_contract.report import GONE_TASKS, gone_message
from crontask_operator import names, schedule
from crontask_operator.images import AllowList
from crontask_operator.spec import CronTaskSpec

MIN_STARTING_DEADLINE: Final = 60
MAX_STARTING_DEADLINE: Final = 3600


@dataclass(frozen=True)
class Timing:
    """The concrete deadlines of a valid CronTask's CronJob."""

    active_deadline_seconds: int
    starting_deadline_seconds: int
    shortest_interval: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Why no CronJob is written for this spec."""

    reason: str
    message: str
    delete_cronjob: bool = field(default=False)
    """A retired task removes a CronJob left from an earlier, valid spec."""
    suspend_cronjob: bool = field(default=False)
    """A CronJob left from an earlier, valid spec must not run on (its image was allowed then,
    but the CronTask now asks for something else): it is suspended until the spec is fixed."""


def margin(seconds: int) -> int:
    """Head-room kept below a limit: a tenth of it, at least a minute, at most five."""
    return max(60, min(300, seconds // 10))


def process_limit(spec: CronTaskSpec, namespace_recover_stale: int | None) -> int:
    """The staleness threshold a process run must stay below: the stricter of its own
    ``process.recoverStaleAfter`` and any recover CronTask's ``staleAfter`` in the namespace."""
    own = duration_seconds(spec.params.get("recoverStaleAfter", "30m"))
    return own if namespace_recover_stale is None else min(own, namespace_recover_stale)


def resolve(name: str, spec: CronTaskSpec, now: dt.datetime,
            namespace_recover_stale: int | None = None,
            allowed_images: AllowList | None = None) -> Timing | Refusal:
    """Validate what the schema could not, and default the deadlines from the schedule.

    ``allowed_images`` is the operator's ``--allowed-images``; without it only the default jobs
    image's repository is allowed, so that forgetting to pass it never widens what runs.
    """
    if spec.task in GONE_TASKS:
        return Refusal("TaskGone", gone_message(spec.task), delete_cronjob=True)
    if spec.image is not None:
        allowed = allowed_images or AllowList.parse((), names.DEFAULT_IMAGE)
        refused = allowed.refusal(spec.image)
        if refused is not None:
            return Refusal("ImageNotAllowed", refused, suspend_cronjob=True)
    if len(name) > names.MAX_NAME_LENGTH:
        return Refusal("NameTooLong", f"the name {name!r} is longer than"
                       f" {names.MAX_NAME_LENGTH} characters; the CronJob controller appends 11")
    try:
        schedule.time_zone(spec.time_zone)
        gap = schedule.shortest_interval(spec.schedule, spec.time_zone, now)
    except schedule.ScheduleError as exc:
        return Refusal("InvalidSchedule", str(exc))

    warnings: list[str] = []
    default_deadline = gap - margin(gap)
    if spec.task == "process":
        limit = process_limit(spec, namespace_recover_stale)
        timeouts = {"stageTimeout": spec.params.get("stageTimeout", "60s"),
                    **{f"stageTimeouts.{k}": v
                       for k, v in (spec.params.get("stageTimeouts") or {}).items()}}
        for where, value in timeouts.items():
            if duration_seconds(value) >= limit:
                return Refusal("DeadlineBeyondRecovery",
                               f"process.{where} ({value}) must be shorter than recover's"
                               f" staleness threshold ({format_duration(limit)})")
        if spec.active_deadline_seconds is not None and spec.active_deadline_seconds >= limit:
            return Refusal("DeadlineBeyondRecovery",
                           f"activeDeadlineSeconds ({spec.active_deadline_seconds}) must be"
                           f" shorter than recover's staleness threshold ({limit}s), or recover"
                           " would fail conversations that are still being processed")
        default_deadline = min(default_deadline, limit - margin(limit))

    deadline = spec.active_deadline_seconds or max(default_deadline, 1)
    if spec.active_deadline_seconds and spec.concurrency_policy == "Forbid" \
            and spec.active_deadline_seconds > gap:
        warnings.append(
            f"activeDeadlineSeconds ({spec.active_deadline_seconds}) is longer than the"
            f" schedule's shortest interval ({gap}s): with concurrencyPolicy Forbid a slow run"
            " skips the next slots")
    starting = spec.starting_deadline_seconds or min(max(gap, MIN_STARTING_DEADLINE),
                                                     MAX_STARTING_DEADLINE)
    return Timing(active_deadline_seconds=deadline, starting_deadline_seconds=starting,
                  shortest_interval=gap, warnings=tuple(warnings))
