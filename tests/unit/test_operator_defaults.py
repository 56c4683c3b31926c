"""One source for every default (issue 8.9): the table in ``defaults`` is what the CRD declares,
what the parser applies, what the flags start from and what the chart's values.yaml says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from crontask_operator import crd, defaults, quantities
from crontask_operator.config import OperatorConfig
from crontask_operator.cronjob import JobDefaults
from crontask_operator.spec import CronTaskSpec, parse_spec

REPO = Path(__file__).resolve().parents[2]
VALUES = yaml.safe_load((REPO / "charts" / "crontask" / "values.yaml").read_text())


def test_the_crd_declares_the_tables_defaults() -> None:
    props = crd.spec_schema()["properties"]
    for key, value in defaults.SPEC.items():
        assert props[key]["default"] == value, key
    assert props["database"]["properties"]["secretKeyRef"]["properties"]["key"]["default"] == (
        defaults.DATABASE_KEY)
    for task, params in defaults.TASK_PARAMS.items():
        for key, value in params.items():
            assert props[task]["properties"][key]["default"] == value, (task, key)
    assert props["successfulJobsHistoryLimit"]["minimum"] == defaults.MIN_HISTORY_LIMIT
    assert props["ttlSecondsAfterFinished"]["minimum"] == defaults.MIN_TTL_SECONDS


def test_the_parser_applies_the_same_defaults() -> None:
    spec = parse_spec({"task": "process", "schedule": "@hourly",
                       "database": {"secretKeyRef": {"name": "db"}}})
    assert spec.time_zone == defaults.SPEC["timeZone"]
    assert spec.concurrency_policy == defaults.SPEC["concurrencyPolicy"]
    assert spec.successful_jobs_history_limit == defaults.SPEC["successfulJobsHistoryLimit"]
    assert spec.log_level == defaults.SPEC["logLevel"]
    assert spec.database.key == defaults.DATABASE_KEY
    assert dict(spec.params) == dict(defaults.TASK_PARAMS["process"])
    bare = CronTaskSpec(task="decay", schedule="@hourly", database=spec.database)
    assert (bare.time_zone, bare.backoff_limit) == (defaults.SPEC["timeZone"],
                                                    defaults.SPEC["backoffLimit"])


def test_flags_and_job_pods_start_from_the_table() -> None:
    config = OperatorConfig()
    assert config.resync_interval == defaults.RESYNC_SECONDS
    assert config.metrics_port == defaults.METRICS_PORT
    assert JobDefaults().requests == dict(defaults.JOB_REQUESTS)
    assert JobDefaults().image == defaults.JOB_IMAGE


def quantity_map(values: dict[str, Any]) -> dict[str, str]:
    return {k: str(quantities.canonical(v)) for k, v in values.items()}


def test_the_charts_values_are_the_tables() -> None:
    jobs, operator, tasks = VALUES["jobs"], VALUES["operator"], VALUES["defaultCronTasks"]
    assert quantity_map(jobs["resources"]["requests"]) == dict(defaults.JOB_REQUESTS)
    assert quantity_map(jobs["resources"]["limits"]) == dict(defaults.JOB_LIMITS)
    assert jobs["image"]["pullPolicy"] == defaults.JOB_IMAGE_PULL_POLICY
    assert operator["resyncInterval"] == defaults.RESYNC_SECONDS
    assert operator["workers"] == defaults.WORKERS
    assert operator["metrics"]["port"] == defaults.METRICS_PORT
    assert operator["healthPort"] == defaults.HEALTH_PORT
    assert operator["logFormat"] == defaults.LOG_FORMAT
    assert operator["logLevel"] == defaults.LOG_LEVEL
    assert VALUES["database"]["secretKey"] == defaults.DATABASE_KEY
    assert tasks["timeZone"] == defaults.TIME_ZONE
    for task, keys in (("recover", ("staleAfter", "abandonedAfter")), ("decay", ("window",)),
                       ("process", ("batchSize", "maxConcurrentPipelines", "stageTimeout"))):
        for key in keys:
            assert tasks[task][key] == defaults.TASK_PARAMS[task][key], (task, key)


LITERALS = re.compile(r'"(30m|2h|50m|15m|60s|Etc/UTC|50m|128Mi|256Mi|crontask-jobs:dev)"')


def test_no_module_repeats_a_default() -> None:
    """Each default is written once: in defaults.py, not as a literal elsewhere."""
    found = []
    for path in sorted((REPO / "operator" / "crontask_operator").glob("*.py")):
        if path.name == "defaults.py":
            continue
        found += [f"{path.name}: {m.group(0)}" for m in LITERALS.finditer(path.read_text())]
    templates = REPO / "charts" / "crontask" / "templates"
    for path in sorted(templates.glob("crontask-*.yaml")):
        found += [f"{path.name}: {line.strip()}" for line in path.read_text().splitlines()
                  if "| default" in line]
    assert found == []


def test_the_parser_needs_neither_yaml_nor_the_crd_file() -> None:
    code = ("import sys, crontask_operator.spec, crontask_operator.reconcile;"
            " print('yaml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout.strip()
    assert out == "False"
