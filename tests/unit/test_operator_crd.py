"""The checked-in CRD is the generator's output, and its schema says what the docs promise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from crontask_operator import crd

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "charts" / "crontask" / "crds" / "crontasks.crontask.dev.yaml"


def _validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(crd.openapi_schema())


def test_checked_in_crd_matches_the_generator() -> None:
    assert CRD_FILE.read_text() == crd.render(), (
        f"regenerate: .venv/bin/python -m crontask_operator.crd > {CRD_FILE.relative_to(REPO)}")


def test_every_schema_property_has_a_description() -> None:
    missing: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        for key, sub in (node.get("properties") or {}).items():
            if key not in ("metadata",) and "description" not in sub:
                missing.append(f"{path}.{key}")
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(crd.openapi_schema(), "")
    assert missing == []


def test_names_status_subresource_and_columns() -> None:
    body = crd.crd()
    spec = body["spec"]
    assert spec["names"]["shortNames"] == ["ct"]
    assert "all" in spec["names"]["categories"]
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    assert columns == ["Task", "Schedule", "Suspend", "Ready", "Last Outcome", "Stage Errors",
                       "Last Run", "Age"]


def test_structural_every_node_has_a_type() -> None:
    """A structural schema types every node (except int-or-string and preserved objects)."""
    untyped: list[str] = []

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            return
        if "type" not in node and not node.get("x-kubernetes-int-or-string"):
            untyped.append(path)
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}.{key}")

    walk(crd.openapi_schema(), "")
    assert untyped == []


@pytest.mark.parametrize("task", ["recover", "decay", "process", "detect-stuck", "recover-stuck"])
def test_schema_accepts_every_task(task: str) -> None:
    _validator().validate({"spec": {"task": task, "schedule": "@hourly",
                                    "database": {"secretKeyRef": {"name": "db"}}}})


@pytest.mark.parametrize(("spec", "fragment"), [
    ({"task": "nope", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}}},
     "is not one of"),
    ({"task": "decay", "database": {"secretKeyRef": {"name": "db"}}}, "'schedule'"),
    ({"task": "decay", "schedule": "@hourly"}, "'database'"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "concurrencyPolicy": "Sometimes"}, "is not one of"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "successfulJobsHistoryLimit": 50}, "is greater than the maximum"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "decay": {"window": "fifty minutes"}}, "does not match"),
    ({"task": "process", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "process": {"batchSize": 0}}, "is less than the minimum"),
    # Issue 8.4: zero durations are refused by the schema, not by every run exiting 2.
    ({"task": "recover", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "recover": {"staleAfter": "0s"}}, "does not match"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "decay": {"window": "0h"}}, "does not match"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "decay": {"window": "0h0m0s"}}, "does not match"),
    # Issue 8.1: the operator must always see a finished Job.
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "successfulJobsHistoryLimit": 0}, "is less than the minimum"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "ttlSecondsAfterFinished": 0}, "is less than the minimum"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "resources": {"limits": {"memory": "-1Gi"}}}, "does not match"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"},
                                          "fieldRef": {"fieldPath": "metadata.name"}}}]},
     "has too many properties"),
    ({"task": "decay", "schedule": "@hourly", "database": {"secretKeyRef": {"name": "db"}},
      "env": [{"name": "X", "valueFrom": {}}]}, "should be non-empty"),
])
def test_schema_refuses(spec: dict[str, Any], fragment: str) -> None:
    errors = [e.message for e in _validator().iter_errors({"spec": spec})]
    assert any(fragment in m for m in errors), errors


def test_cel_rules_are_present_for_cross_field_checks() -> None:
    """CEL is evaluated by the API server only (tests/cluster covers it); here: it is there."""
    text = json.dumps(crd.crd())
    for rule in ("self.metadata.name.size() <= 52", "self.task == 'process'",
                 "duration(self.abandonedAfter) > duration(self.staleAfter)",
                 "e.name != 'DATABASE_URL'", "duration(self.stageTimeout)"):
        assert rule in text


@pytest.mark.parametrize("value", ["1s", "90s", "1h30m", "0h1m", "01m", "87600h"])
def test_positive_durations_are_admitted(value: str) -> None:
    _validator().validate({"spec": {"task": "decay", "schedule": "@hourly",
                                    "database": {"secretKeyRef": {"name": "db"}},
                                    "decay": {"window": value}}})


def test_every_duration_has_an_upper_bound_rule() -> None:
    text = json.dumps(crd.crd())
    assert text.count("duration(self) <= duration('87600h')") == 7


def test_the_status_schema_declares_the_bookkeeping_fields() -> None:
    status = crd.status_schema()["properties"]
    assert status["countedJobs"]["maxItems"] == 100
    assert status["missedRuns"]["minimum"] == 0
    assert status["lastRun"]["properties"]["message"]["maxLength"] == 1024
