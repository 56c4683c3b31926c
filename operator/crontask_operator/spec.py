"""The CronTask spec as typed values: checked against the CRD's own schema, defaults applied.

The API server has already checked and defaulted every object it stores, but the operator trusts
nothing from outside: ``parse_spec`` checks the spec against the very schema the API server uses
(``crd.spec_schema``), applies the defaults of ``defaults`` (objects stored before a default
existed have none), reads quantities and durations the way the API server and the jobs will, and
raises ``SpecError`` and nothing else for any input. Everything after it can rely on the types.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from crontask_contract.durations import DurationError, duration_seconds
from crontask_operator import crd, defaults, quantities, schemacheck


class SpecError(ValueError):
    """A spec the operator cannot build a CronJob from; the message says where and why."""


@dataclass(frozen=True)
class SecretKeyRef:
    name: str
    key: str = defaults.DATABASE_KEY


@dataclass(frozen=True)
class CronTaskSpec:
    """Everything the CronJob builder and the validation read from a CronTask's spec."""

    task: str
    schedule: str
    database: SecretKeyRef
    time_zone: str = defaults.SPEC["timeZone"]
    suspend: bool = defaults.SPEC["suspend"]
    concurrency_policy: str = defaults.SPEC["concurrencyPolicy"]
    starting_deadline_seconds: int | None = None
    successful_jobs_history_limit: int = defaults.SPEC["successfulJobsHistoryLimit"]
    failed_jobs_history_limit: int = defaults.SPEC["failedJobsHistoryLimit"]
    active_deadline_seconds: int | None = None
    backoff_limit: int = defaults.SPEC["backoffLimit"]
    ttl_seconds_after_finished: int | None = None
    image: str | None = None
    image_pull_policy: str | None = None
    log_level: str = defaults.SPEC["logLevel"]
    resources: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """requests/limits, each quantity in the API server's own spelling."""
    env: tuple[Mapping[str, Any], ...] = ()
    """As the API server stores them: an empty value is no value."""
    params: Mapping[str, Any] = field(default_factory=dict)
    """The task's own block (spec.recover, spec.decay or spec.process), defaults applied."""


@cache
def _schema() -> Mapping[str, Any]:
    return crd.spec_schema()


def _quantity(value: Any, where: str, resource_list: bool = False) -> str:
    parsed = quantities.parse(value)
    if parsed is None:
        raise SpecError(f"{where}: {str(value)[:60]!r} is not a resource quantity")
    if parsed.value > quantities.MAX_VALUE:
        raise SpecError(f"{where}: {str(value)[:60]!r} is out of range"
                        f" (at most {quantities.MAX_VALUE})")
    return parsed.in_resource_list().text if resource_list else parsed.text


def _resources(raw: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    return {kind: {name: _quantity(q, f"resources.{kind}.{name}", resource_list=True)
                   for name, q in amounts.items()}
            for kind, amounts in raw.items() if amounts}


def _env_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": entry["name"]}
    if entry.get("value"):
        out["value"] = entry["value"]
    source = entry.get("valueFrom")
    if source:
        source = {kind: dict(ref) for kind, ref in source.items()}
        divisor = (source.get("resourceFieldRef") or {}).get("divisor")
        if divisor is not None:
            source["resourceFieldRef"]["divisor"] = _quantity(
                divisor, f"env.{entry['name']}.valueFrom.resourceFieldRef.divisor")
        out["valueFrom"] = source
    return out


def _durations(task: str, params: Mapping[str, Any]) -> None:
    checks = {k: v for k, v in params.items() if isinstance(v, str) and k != "pipeline"}
    checks.update({f"stageTimeouts.{k}": v for k, v in (params.get("stageTimeouts") or {}).items()})
    longest = duration_seconds(defaults.MAX_DURATION)
    for where, value in checks.items():
        try:
            seconds = duration_seconds(value)
        except DurationError as exc:
            raise SpecError(f"{task}.{where}: {exc}") from exc
        if seconds > longest:
            raise SpecError(f"{task}.{where}: {value} is longer than {defaults.MAX_DURATION}")


def parse_spec(raw: Any) -> CronTaskSpec:
    """A CronTaskSpec from an object's ``spec``; SpecError for anything else."""
    if not isinstance(raw, Mapping):
        raise SpecError("the spec must be an object")
    problems = schemacheck.errors(raw, _schema(), "spec")
    if problems:
        raise SpecError("; ".join(problems[:3]))
    task = raw["task"]
    block = raw.get(task) if task in defaults.TASK_PARAMS else None
    params = {**defaults.TASK_PARAMS.get(task, {}), **(block or {})}
    _durations(task, params)
    spec = {**defaults.SPEC, **raw}
    db = raw["database"]["secretKeyRef"]
    return CronTaskSpec(
        task=task,
        schedule=raw["schedule"],
        database=SecretKeyRef(name=db["name"], key=db.get("key") or defaults.DATABASE_KEY),
        time_zone=spec["timeZone"],
        suspend=spec["suspend"],
        concurrency_policy=spec["concurrencyPolicy"],
        starting_deadline_seconds=raw.get("startingDeadlineSeconds"),
        successful_jobs_history_limit=spec["successfulJobsHistoryLimit"],
        failed_jobs_history_limit=spec["failedJobsHistoryLimit"],
        active_deadline_seconds=raw.get("activeDeadlineSeconds"),
        backoff_limit=spec["backoffLimit"],
        ttl_seconds_after_finished=raw.get("ttlSecondsAfterFinished"),
        image=raw.get("image"),
        image_pull_policy=raw.get("imagePullPolicy"),
        log_level=spec["logLevel"],
        resources=_resources(raw.get("resources") or {}),
        env=tuple(_env_entry(e) for e in raw.get("env") or ()),
        params=params,
    )
