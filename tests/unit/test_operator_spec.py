"""Parsing a spec: the CRD's schema checked at run time, defaults applied, SpecError only."""

from __future__ import annotations

from typing import Any

import pytest
from operator_helpers import crontask_spec

from crontask_operator.spec import SpecError, parse_spec


@pytest.mark.parametrize(("change", "fragment"), [
    ({"resources": {"limits": {"memory": "1e999999999"}}}, "out of range"),
    ({"resources": {"limits": {"cpu": "1e1.5"}}}, "not a resource quantity"),
    ({"successfulJobsHistoryLimit": "3"}, "must be of type integer"),
    ({"successfulJobsHistoryLimit": True}, "must be of type integer"),
    ({"suspend": "yes"}, "must be of type boolean"),
    ({"decay": {"window": "0s"}}, "does not match"),
    ({"process": {"idleAfter": "99999999999h"}}, "longer than the maximum"),
    ({"process": {"idleAfter": "87601h"}}, "longer than 87600h"),
    ({"env": [{"name": "A"}, {"name": "A"}]}, "duplicate entries"),
    ({"unknown": 1}, "unknown field"),
    ({"schedule": None}, "must be of type string"),
])
def test_bad_specs_raise_spec_error_saying_where(change: dict[str, Any], fragment: str) -> None:
    task = next((t for t in ("decay", "process") if t in change), "recover")
    with pytest.raises(SpecError) as info:
        parse_spec(crontask_spec(task, **change))
    assert fragment in str(info.value)


@pytest.mark.parametrize("raw", [None, [], "spec", 3, {"task": "recover"}])
def test_not_a_spec_at_all(raw: Any) -> None:
    with pytest.raises(SpecError):
        parse_spec(raw)


def test_quantities_and_env_come_out_in_the_servers_form() -> None:
    spec = parse_spec(crontask_spec(
        "recover", resources={"requests": {"cpu": "1000m", "memory": 1024}},
        env=[{"name": "EMPTY", "value": ""},
             {"name": "LIMIT", "valueFrom": {"resourceFieldRef": {
                 "resource": "limits.memory", "divisor": "1024Ki"}}}]))
    assert spec.resources == {"requests": {"cpu": "1", "memory": "1024"}}
    assert spec.env == ({"name": "EMPTY"}, {"name": "LIMIT", "valueFrom": {
        "resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}})
