"""The operator states a default for every task parameter (in the CRD, its descriptions and
defaults.py) and the jobs CLI has its own for every flag (a person running `crontask-job` by
hand, or a CronTask leaving a parameter unset). The operator may not import the jobs' code, so
this test is where the two are held equal: a default changed on one side only fails here."""

from __future__ import annotations

from typing import Any

import pytest

from crontask_jobs import cli, config
from crontask_jobs.pipeline.engine import DEFAULT_STAGE_TIMEOUT
from crontask_jobs.tasks.decay import DecayOptions
from crontask_jobs.tasks.process import ProcessOptions
from crontask_jobs.tasks.recover import RecoverOptions
from crontask_operator import defaults

PASSED: dict[tuple[str, str], tuple[str, str, Any]] = {
    # (task, CRD parameter): (job flag, the task options' field, how the job parses it)
    ("recover", "staleAfter"): ("--stale-after", "stale_after", config.duration),
    ("recover", "abandonedAfter"): ("--abandoned-after", "abandoned_after", config.duration),
    ("decay", "window"): ("--window", "window", config.duration),
    ("process", "idleAfter"): ("--idle-after", "idle_after", config.duration),
    ("process", "batchSize"): ("--batch-size", "batch_size", int),
    ("process", "maxConcurrentPipelines"): ("--max-concurrent-pipelines",
                                            "max_concurrent_pipelines", int),
}
"""Parameters the operator always passes (the API server defaults them)."""
UNSET: dict[tuple[str, str], tuple[str, str, Any]] = {
    ("decay", "maxDecayPerRun"): ("--max-decay-per-run", "max_decay_per_run", config.points),
    ("decay", "workers"): ("--workers", "workers", int),
}
"""Parameters the operator passes only when set: the job's default is what `unset` means."""
OPTIONS = {"recover": RecoverOptions(), "decay": DecayOptions(), "process": ProcessOptions()}


def cli_default(task: str, flag: str) -> Any:
    [opt] = [o for o in cli.TASK_OPTS[task] if o.flag == flag]
    return opt.parse(opt.default)


@pytest.mark.parametrize(("task", "param"), sorted(PASSED))
def test_the_operators_default_is_the_jobs_own(task: str, param: str) -> None:
    flag, field, parse = PASSED[(task, param)]
    stated = parse(str(defaults.TASK_PARAMS[task][param]))
    assert cli_default(task, flag) == stated
    assert getattr(OPTIONS[task], field) == stated


@pytest.mark.parametrize(("task", "param"), sorted(UNSET))
def test_what_the_crd_says_unset_means_is_what_the_job_does(task: str, param: str) -> None:
    flag, field, parse = UNSET[(task, param)]
    stated = parse(str(defaults.JOB_UNSET[task][param]))
    assert cli_default(task, flag) == stated
    assert getattr(OPTIONS[task], field) == stated


def test_the_default_stage_timeout_is_the_jobs_own() -> None:
    assert config.duration(defaults.TASK_PARAMS["process"]["stageTimeout"]) == (
        DEFAULT_STAGE_TIMEOUT)


def test_every_parameter_the_operator_passes_is_held_here() -> None:
    """A new parameter must be added above, or this fails."""
    held = {*PASSED, *UNSET, ("process", "stageTimeout")}
    operator_only = {("process", "parallelism"), ("process", "recoverStaleAfter")}
    stated = {(t, p) for t, ps in defaults.TASK_PARAMS.items() for p in ps}
    stated |= {(t, p) for t, ps in defaults.JOB_UNSET.items() for p in ps}
    assert stated - operator_only == held
