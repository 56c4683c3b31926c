"""examples/ are valid CronTasks: the CRD's schema accepts them and the operator would run them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from operator_helpers import NOW

from crontask_operator import crd
from crontask_operator.spec import parse_spec
from crontask_operator.validation import Timing, resolve

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def crontasks() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] == "CronTask"]
    return docs


def test_examples_cover_the_three_tasks() -> None:
    assert sorted(d["spec"]["task"] for d in crontasks()) == ["decay", "process", "recover"]


@pytest.mark.parametrize("doc", crontasks(), ids=lambda d: d["metadata"]["name"])
def test_example_is_valid(doc: dict[str, Any]) -> None:
    jsonschema.Draft7Validator(crd.openapi_schema()).validate(doc)
    assert doc["spec"]["timeZone"], "examples spell out their time zone"
    decision = resolve(doc["metadata"]["name"], parse_spec(doc["spec"]), NOW)
    assert isinstance(decision, Timing), decision
    assert not decision.warnings
