"""Folding runs into status: idempotent, bounded, ordered; conditions the Kubernetes way."""

from __future__ import annotations

from typing import Any

from crontask_contract.report import StageErrors
from crontask_operator import defaults
from crontask_operator.conditions import Condition, set_condition
from crontask_operator.outcomes import FAILED, SKIPPED, SUCCEEDED, Run
from crontask_operator.status import fold_runs, healthy


def run(n: int, outcome: str = SUCCEEDED, **extra: Any) -> Run:
    return Run(job_name=f"t-{n}", job_uid=f"u-{n}", outcome=outcome,
               start_time=f"2026-01-05T12:{n:02d}:00Z",
               completion_time=f"2026-01-05T12:{n:02d}:30Z", **extra)


EVERY_JOB = {f"u-{n}" for n in range(100)}


def apply(status: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
    return fold_runs(status, runs, EVERY_JOB).status


def test_fold_counts_and_last_run() -> None:
    status = apply({}, [run(2, FAILED, reason="OOMKilled"), run(1),
                        run(3, SKIPPED, reason="recent_execution")])
    assert (status["succeededRuns"], status["failedRuns"], status["skippedRuns"]) == (1, 1, 1)
    assert status["lastRun"]["jobName"] == "t-3"
    assert [r["jobName"] for r in status["recentRuns"]] == ["t-3", "t-2", "t-1"]
    assert status["lastFailureTime"] == "2026-01-05T12:02:30Z"
    assert status["lastSuccessfulTime"] == "2026-01-05T12:03:30Z"


def test_fold_is_idempotent() -> None:
    once = apply({}, [run(1), run(2)])
    assert fold_runs(once, [run(1), run(2)], EVERY_JOB).status == once
    assert fold_runs(once, [run(1), run(2)], EVERY_JOB).new_runs == ()
    assert once["countedJobs"] == ["u-1", "u-2"]


def test_counted_jobs_keep_only_jobs_that_still_exist() -> None:
    once = apply({}, [run(1), run(2)])
    later = fold_runs(once, [run(2)], {"u-2"}).status
    assert later["countedJobs"] == ["u-2"]
    assert later["succeededRuns"] == 2


def test_recent_runs_are_bounded() -> None:
    status: dict[str, Any] = {}
    for n in range(25):
        status = apply(status, [run(n)])
    assert len(status["recentRuns"]) == defaults.MAX_RECENT_RUNS
    assert status["recentRuns"][0]["jobName"] == "t-24"
    assert status["succeededRuns"] == 25


def test_older_run_does_not_replace_last_run() -> None:
    status = apply({}, [run(5)])
    status = apply(status, [run(4, FAILED)])
    assert status["lastRun"]["jobName"] == "t-5"
    assert (status["succeededRuns"], status["failedRuns"], status["skippedRuns"]) == (1, 1, 0)


def test_last_run_carries_stage_errors() -> None:
    status = apply({}, [run(1, stage_errors={"summarise": StageErrors(2, "no messages")},
                            counts={"processed": 4})])
    last = status["lastRun"]
    assert last["stageErrorCount"] == 2
    assert last["stageErrors"] == {"summarise": {"count": 2, "lastMessage": "no messages"}}
    assert last["counts"] == {"processed": 4}
    cond = healthy(last)
    assert (cond.status, cond.reason) == ("False", "StageErrors")
    assert "summarise: 2 error(s)" in cond.message


def test_healthy_condition() -> None:
    assert healthy(None).status == "Unknown"
    assert healthy(apply({}, [run(1)])["lastRun"]).reason == "RunSucceeded"
    failed = healthy(apply({}, [run(1, FAILED, reason="OOMKilled")])["lastRun"])
    assert (failed.status, failed.reason) == ("False", "RunFailed")
    assert "OOMKilled" in failed.message
    assert healthy(apply({}, [run(1, SKIPPED)])["lastRun"]).status == "True"


def test_transition_time_moves_only_when_status_flips() -> None:
    conds = set_condition([], Condition("Ready", "True", "CronJobReady", "a"), 1, "T1")
    conds = set_condition(conds, Condition("Ready", "True", "CronJobReady", "b"), 2, "T2")
    assert conds[0]["lastTransitionTime"] == "T1"
    assert conds[0]["message"] == "b"
    assert conds[0]["observedGeneration"] == 2
    conds = set_condition(conds, Condition("Ready", "False", "InvalidSchedule", "c"), 3, "T3")
    assert conds[0]["lastTransitionTime"] == "T3"


def test_conditions_are_keyed_by_type_in_a_stable_order() -> None:
    conds = set_condition([], Condition("Healthy", "Unknown", "NoRunYet", ""), 1, "T")
    conds = set_condition(conds, Condition("Ready", "True", "CronJobReady", ""), 1, "T")
    conds = set_condition(conds, Condition("Ready", "True", "CronJobReady", ""), 1, "T")
    assert [c["type"] for c in conds] == ["Ready", "Healthy"]
