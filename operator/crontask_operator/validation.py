"""Checks the schema cannot make, and the deadlines that depend on the schedule.

One pure function, ``resolve``, turns a parsed spec into either the concrete timing of its
CronJob or a refusal with a CamelCase reason and a message for humans. Refusals become
Ready=False and suspend the CronJob (``Refusal.action``); they are never raised, so a bad spec
costs one status patch, not a retry loop.

The margin rule (see README, "Timing that cannot stall"): a run's default deadline is the
schedule's shortest real interval minus a tenth of it, at least 10 s and at most 5 min, so every
schedule gets a usable deadline of at least 5/6 of its interval (50 s for ``* * * * *``), and a
slow run ends before the next slot instead of making it skip.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from crontask_contract.durations import duration_seconds, format_duration
from crontask_contract.report import GONE_TASKS, gone_message
from crontask_operator import defaults, names, schedule
from crontask_operator.spec import CronTaskSpec

MIN_MARGIN: Final = 10
MAX_MARGIN: Final = 300
MIN_STARTING_DEADLINE: Final = 60
MAX_STARTING_DEADLINE: Final = 3600
SUSPEND: Final = "suspend"
DELETE: Final = "delete"


@dataclass(frozen=True)
class Timing:
    """The concrete deadlines of a valid CronTask's CronJob."""

    active_deadline_seconds: int
    starting_deadline_seconds: int
    shortest_interval: int
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Refusal:
    """Why no CronJob is written for this spec, and what happens to one already there.

    Every refusal suspends an existing CronJob until the spec is fixed (the old configuration
    must not go on running), except a retired task, whose CronJob is deleted. A new refusal
    reason needs nothing else: the reconcile treats every Refusal the same way.
    """

    reason: str
    message: str
    action: str = SUSPEND


def margin(seconds: int) -> int:
    """Head-room kept below a limit: a tenth of it, at least 10 s, at most 5 minutes."""
    return max(MIN_MARGIN, min(MAX_MARGIN, seconds // 10))


def deadline_within(seconds: int) -> int:
    """The longest run that ends a margin before ``seconds`` are up (at least 1 s)."""
    return max(1, seconds - margin(seconds))


def process_limit(spec: CronTaskSpec, namespace_recover_stale: int | None) -> int:
    """The staleness threshold a process run must stay below: the stricter of its own
    ``process.recoverStaleAfter`` and any recover CronTask's ``staleAfter`` in the namespace."""
    own = duration_seconds(spec.params.get(
        "recoverStaleAfter", defaults.TASK_PARAMS["process"]["recoverStaleAfter"]))
    return own if namespace_recover_stale is None else min(own, namespace_recover_stale)


def _process(spec: CronTaskSpec, namespace_recover_stale: int | None,
             default_deadline: int) -> int | Refusal:
    limit = process_limit(spec, namespace_recover_stale)
    timeouts = {"stageTimeout": spec.params.get(
        "stageTimeout", defaults.TASK_PARAMS["process"]["stageTimeout"]),
        **{f"stageTimeouts.{k}": v for k, v in (spec.params.get("stageTimeouts") or {}).items()}}
    for where, value in sorted(timeouts.items()):
        if duration_seconds(value) >= limit:
            return Refusal("DeadlineBeyondRecovery",
                           f"process.{where} ({value}) must be shorter than recover's"
                           f" staleness threshold ({format_duration(limit)})")
    if spec.active_deadline_seconds is not None and spec.active_deadline_seconds >= limit:
        return Refusal("DeadlineBeyondRecovery",
                       f"activeDeadlineSeconds ({spec.active_deadline_seconds}) must be"
                       f" shorter than recover's staleness threshold ({limit}s), or recover"
                       " would fail conversations that are still being processed")
    return min(default_deadline, deadline_within(limit))


def resolve(name: str, spec: CronTaskSpec, now: dt.datetime,
            namespace_recover_stale: int | None = None) -> Timing | Refusal:
    """Validate what the schema could not, and default the deadlines from the schedule."""
    if spec.task in GONE_TASKS:
        return Refusal("TaskGone", gone_message(spec.task), action=DELETE)
    if len(name) > names.MAX_NAME_LENGTH:
        return Refusal("NameTooLong", f"the name {name[:80]!r} is longer than"
                       f" {names.MAX_NAME_LENGTH} characters; the CronJob controller appends 11")
    try:
        schedule.time_zone(spec.time_zone)
        gap = schedule.shortest_interval(spec.schedule, spec.time_zone, now)
    except schedule.ScheduleError as exc:
        return Refusal("InvalidSchedule", str(exc))

    default_deadline = deadline_within(gap)
    if spec.task == "process":
        bounded = _process(spec, namespace_recover_stale, default_deadline)
        if isinstance(bounded, Refusal):
            return bounded
        default_deadline = bounded

    warnings: list[str] = []
    deadline = spec.active_deadline_seconds or default_deadline
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
