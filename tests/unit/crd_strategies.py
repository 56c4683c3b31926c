"""Hypothesis strategies derived from the CRD's own schema, and for Jobs, Pods and schedules.

``specs()`` draws CronTask specs the CRD's OpenAPI schema admits (types, enums, ranges,
patterns, lengths, list keys), with the task's own block only (as the CEL rule demands) and
schedules and time zones drawn from a mix of valid and hostile ones. CEL rules are not applied,
so some drawn specs are ones the API server would refuse: the properties must hold for them too.
"""

from __future__ import annotations

import string
import zoneinfo
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

from crontask_operator import crd

SCHEDULES = ["* * * * *", "*/5 * * * *", "*/15 * * * *", "0 * * * *", "30 2 * * *",
             "30 1 * * *", "0 1,3 * * *", "0,59 1,3 * * *", "0 0 * * 0", "0 0 1 * *",
             "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "0 0 29 2 *",
             "5-55/10 8-18 * * 1-5", "0 12 * jan,jul mon", "0 0 30 2 *", "61 * * * *",
             "* * * * * *", "@every 5m", "TZ=UTC * * * *", "H * * * *", "0 0 L * *", "*/0 * * * *"]
ZONES = ["Etc/UTC", "UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe",
         "Asia/Kolkata", "America/Santiago", "Pacific/Chatham", "Africa/Casablanca",
         "Mars/Olympus_Mons", "../etc/passwd", "Local", ""]
ALL_ZONES = sorted(zoneinfo.available_timezones())

cron_field = st.one_of(
    st.just("*"),
    st.integers(0, 59).map(str),
    st.tuples(st.integers(0, 30), st.integers(1, 15)).map(lambda t: f"{t[0]}-59/{t[1]}"),
    st.lists(st.integers(0, 59), min_size=1, max_size=4).map(lambda v: ",".join(map(str, v))),
    st.text(alphabet="0123456789*/,-?LHW#", min_size=1, max_size=6),
)
schedules = st.one_of(
    st.sampled_from(SCHEDULES),
    st.tuples(cron_field, cron_field, cron_field, cron_field, cron_field).map(" ".join),
    st.text(max_size=40),
)
zones = st.one_of(st.sampled_from(ZONES), st.sampled_from(ALL_ZONES), st.text(max_size=20))


def _string(schema: Mapping[str, Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), min(schema.get("maxLength", 40), 40)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "pattern" in schema:
        return st.from_regex(schema["pattern"], fullmatch=True).filter(
            lambda s: low <= len(s) <= schema.get("maxLength", 10**9))
    return st.text(min_size=low, max_size=max(low, high))


def from_schema(schema: Mapping[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values the OpenAPI ``schema`` admits."""
    if schema.get("x-kubernetes-int-or-string"):
        return st.one_of(st.integers(0, 2**63 - 1), _string(schema))
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1))
    if kind == "number":
        return st.floats(schema.get("minimum", -1e6), 1e15, allow_nan=False)
    if kind == "array":
        items = from_schema(schema["items"], depth + 1)
        keys = schema.get("x-kubernetes-list-map-keys") or []
        unique = (lambda item: tuple(item.get(k) for k in keys)) if keys else None
        return st.lists(items, max_size=min(schema.get("maxItems", 3), 3), unique_by=unique)
    if kind == "object":
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        if schema.get("x-kubernetes-preserve-unknown-fields") and not properties:
            return st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)
        fixed = {k: from_schema(v, depth + 1) for k, v in properties.items() if k in required}
        optional = {k: from_schema(v, depth + 1) for k, v in properties.items()
                    if k not in required}
        base = st.fixed_dictionaries(fixed, optional=optional)
        extra = schema.get("additionalProperties")
        if isinstance(extra, Mapping):
            low = schema.get("minProperties", 0)
            high = min(schema.get("maxProperties", 3), 3)
            return st.dictionaries(st.text(string.ascii_lowercase + "_-", min_size=1, max_size=8),
                                   from_schema(extra, depth + 1), min_size=low, max_size=high)
        if "maxProperties" in schema:  # exactly-one-of objects (valueFrom)
            return st.one_of(*(st.fixed_dictionaries({k: s}) for k, s in optional.items()))
        return base
    return st.nothing()


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    schema = crd.spec_schema()
    props = schema["properties"]
    task = draw(st.sampled_from(props["task"]["enum"]))
    others = {k: v for k, v in props.items()
              if k not in ("task", "schedule", "timeZone", "recover", "decay", "process")}
    spec = draw(from_schema({**schema, "properties": others,
                             "required": ["database"]}))
    spec["task"] = task
    spec["schedule"] = draw(schedules)
    if draw(st.booleans()):
        spec["timeZone"] = draw(zones)
    if task in ("recover", "decay", "process") and draw(st.booleans()):
        spec[task] = draw(from_schema(props[task]))
    return spec


# -- Jobs and Pods, with whatever a pod may write as its termination message ---------------
times = st.one_of(st.none(), st.sampled_from([
    "2026-01-05T12:00:05Z", "2026-01-05T12:00:05+02:00", "2026-01-05T11:59:00Z",
    "2026-01-05T12:00:05.123456Z", "yesterday", "9999-12-31T23:59:59-14:00", ""]))
messages = st.one_of(
    st.none(), st.text(max_size=200),
    st.sampled_from(['{"v":1,"task":"p","status":"completed","counts":{"a":1}}',
                     '{"v":1,"task":"p","status":"failed","reason":"x","error":"e"}',
                     '{"v":1,"task":"p","status":"skipped","reason":"recent_execution"}',
                     '{"v":1,"task":"p","status":"completed","counts":{"a":NaN}}',
                     '{"v":true,"task":"p","status":"completed"}', "[" * 100, "é" * 2048,
                     '{"v":1,"task":"p","status":"completed","counts":{"a":99999999999999999999}}']),
)


@st.composite
def job_bodies(draw: st.DrawFn, crontask: str = "t") -> dict[str, Any]:
    index = draw(st.integers(0, 5))
    kind = draw(st.sampled_from(["Complete", "Failed", None, "Suspended"]))
    status: dict[str, Any] = {"startTime": draw(times)}
    if kind:
        status["conditions"] = [{"type": kind, "status": draw(st.sampled_from(["True", "False"])),
                                 "reason": draw(st.one_of(st.none(), st.text(max_size=300))),
                                 "message": draw(st.one_of(st.none(), st.text(max_size=300))),
                                 "lastTransitionTime": draw(times)}]
    if draw(st.booleans()):
        status["completionTime"] = draw(times)
    owner = draw(st.sampled_from([crontask, "someone-else"]))
    return {"metadata": {"name": f"{crontask}-{index}", "namespace": "ns",
                         "uid": f"job-{index}", "labels": {"crontask.dev/crontask": crontask},
                         "ownerReferences": [{"kind": "CronJob", "name": owner, "uid": "cj",
                                              "controller": True}]},
            "status": status}


@st.composite
def pod_bodies(draw: st.DrawFn, crontask: str = "t") -> dict[str, Any]:
    index = draw(st.integers(0, 5))
    terminated = {"exitCode": draw(st.one_of(st.integers(-1, 300), st.text(max_size=3))),
                  "reason": draw(st.one_of(st.none(), st.sampled_from(
                      ["Completed", "Error", "OOMKilled", "DeadlineExceeded", "StartError",
                       "ContainerStatusUnknown"]), st.text())),
                  "finishedAt": draw(times)}
    message = draw(messages)
    if message is not None:
        terminated["message"] = message
    state = {"terminated": terminated} if draw(st.booleans()) else {"running": {}}
    return {"metadata": {"name": f"{crontask}-{index}-{draw(st.integers(0, 3))}",
                         "uid": f"pod-{index}-{draw(st.integers(0, 99))}",
                         "creationTimestamp": draw(times),
                         "labels": {"crontask.dev/crontask": crontask,
                                    "batch.kubernetes.io/job-name": f"{crontask}-{index}"},
                         "ownerReferences": [{"kind": "Job", "name": f"{crontask}-{index}",
                                              "uid": f"job-{index}", "controller": True}]},
            "status": {"containerStatuses": [{"name": "crontask-job", "state": state}]}}
