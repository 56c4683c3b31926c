"""Reading a run's outcome from its Job and Pods, including pods killed before reporting."""

from __future__ import annotations

import datetime as dt
from typing import Any

from crontask_contract.report import RunReport, RunStatus, StageErrors, StageTiming, encode
from crontask_operator.outcomes import FAILED, SKIPPED, SUCCEEDED, job_result, pod_result, run_of

FINISHED = "2026-01-05T12:00:05Z"
SOON = dt.datetime(2026, 1, 5, 12, 0, 6, tzinfo=dt.UTC)
LATER = dt.datetime(2026, 1, 5, 12, 5, 0, tzinfo=dt.UTC)


def job(name: str = "process-29000000", *, failed: bool = False,
        reason: str | None = None, message: str | None = None) -> dict[str, Any]:
    cond = {"type": "Failed" if failed else "Complete", "status": "True",
            "lastTransitionTime": FINISHED}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    status: dict[str, Any] = {"startTime": "2026-01-05T12:00:00Z", "conditions": [cond]}
    if not failed:
        status["completionTime"] = FINISHED
    return {"metadata": {"name": name, "namespace": "ns",
                         "labels": {"crontask.dev/crontask": "process"}},
            "status": status}


def pod(name: str = "process-29000000-abcde", job_name: str = "process-29000000", *,
        message: str | None = None, reason: str = "Completed", exit_code: int = 0,
        created: str = "2026-01-05T12:00:00Z", terminated: bool = True) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if terminated:
        ended: dict[str, Any] = {"exitCode": exit_code, "reason": reason, "finishedAt": FINISHED}
        if message:
            ended["message"] = message
        state = {"terminated": ended}
    return {"metadata": {"name": name, "creationTimestamp": created,
                         "labels": {"batch.kubernetes.io/job-name": job_name}},
            "status": {"containerStatuses": [{"name": "crontask-job", "state": state}]}}


def report(status: RunStatus = RunStatus.COMPLETED, **extra: Any) -> str:
    return encode(RunReport(task="process", status=status, **extra))


def test_running_job_has_no_run_yet() -> None:
    running = {"metadata": {"name": "j", "namespace": "ns"}, "status": {"active": 1}}
    assert run_of(job_result(running), [], SOON) is None


def test_completed_run_with_stage_errors() -> None:
    text = report(counts={"processed": 3, "failed": 1},
                  stage_errors={"summarise": StageErrors(1, "conversation has no messages")},
                  stage_timings={"summarise": StageTiming(3, 30.0, 20.0)},
                  execution_id="42")
    run = run_of(job_result(job()), [pod_result(pod(message=text))], SOON)
    assert run is not None
    assert run.outcome == SUCCEEDED
    assert run.counts == {"processed": 3, "failed": 1}
    assert run.stage_error_count == 1
    assert run.stage_errors["summarise"].last_message == "conversation has no messages"
    assert run.execution_id == "42"
    assert run.start_time == "2026-01-05T12:00:00Z"
    assert run.completion_time == FINISHED


def test_skipped_run_keeps_its_reason() -> None:
    text = report(RunStatus.SKIPPED, reason="recent_execution")
    run = run_of(job_result(job()), [pod_result(pod(message=text))], SOON)
    assert run is not None
    assert run.outcome == SKIPPED
    assert run.reason == "recent_execution"


def test_failed_run_reports_its_error() -> None:
    text = report(RunStatus.FAILED, reason="db_error", error="relation missing")
    run = run_of(job_result(job(failed=True, reason="BackoffLimitExceeded")),
                 [pod_result(pod(message=text, reason="Error", exit_code=1))], SOON)
    assert run is not None
    assert run.outcome == FAILED
    assert (run.reason, run.message) == ("db_error", "relation missing")


def test_oom_killed_pod_without_report() -> None:
    run = run_of(job_result(job(failed=True, reason="BackoffLimitExceeded")),
                 [pod_result(pod(reason="OOMKilled", exit_code=137))], SOON)
    assert run is not None
    assert run.outcome == FAILED
    assert run.reason == "OOMKilled"
    assert "exit code 137" in (run.message or "")


def test_deadline_exceeded_wins_even_without_pods() -> None:
    failed = job_result(job(failed=True, reason="DeadlineExceeded",
                            message="Job was active longer than specified deadline"))
    assert run_of(failed, [], SOON) is None, "waits a moment for the pods' final state"
    run = run_of(failed, [], LATER)
    assert run is not None
    assert run.outcome == FAILED
    assert run.reason == "DeadlineExceeded"


def test_exit_code_names_configuration_and_database_errors() -> None:
    run = run_of(job_result(job(failed=True, reason="BackoffLimitExceeded")),
                 [pod_result(pod(reason="Error", exit_code=3))], SOON)
    assert run is not None
    assert run.reason == "DatabaseUnreachable"


def test_garbage_termination_message_is_a_failed_run() -> None:
    """A pod that wrote something that is not a run report did not run the job as built."""
    run = run_of(job_result(job()), [pod_result(pod(message="Traceback: boom"))], SOON)
    assert run is not None
    assert (run.outcome, run.reason) == (FAILED, "InvalidReport")
    assert "process-29000000-abcde" in (run.message or "")
    assert "not JSON" in (run.message or "")


def test_no_termination_message_at_all_is_a_success_without_report() -> None:
    run = run_of(job_result(job()), [pod_result(pod())], SOON)
    assert run is not None
    assert (run.outcome, run.reason) == (SUCCEEDED, "NoReport")


def test_hostile_job_and_pod_fields_are_clipped_and_checked() -> None:
    body = job(failed=True, reason="R" * 5000, message="m" * 50_000)
    body["status"]["startTime"] = "yesterday"
    body["status"]["conditions"][0]["lastTransitionTime"] = "9999-12-31T23:59:59-14:00"
    result = job_result(body)
    assert result.start_time is None and result.completion_time is None
    assert len(result.reason or "") <= 256 and len(result.message or "") <= 1024
    hostile_pod = pod(reason="X" * 999, exit_code=3)
    hostile_pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] = "3"
    run = run_of(result, [pod_result(hostile_pod)], LATER)
    assert run is not None and run.outcome == FAILED
    assert job_result({"metadata": "nope", "status": ["x"]}).finished is False
    assert pod_result({"status": {"containerStatuses": "x"}}).terminated is False


def test_retries_and_parallel_pods_add_up() -> None:
    first = report(RunStatus.FAILED, reason="stage_timeout", counts={"processed": 2},
                   stage_errors={"classify": StageErrors(2, "first")})
    second = report(counts={"processed": 5}, stage_errors={"classify": StageErrors(1, "second")})
    pods = [pod_result(pod("p-2", message=second, created="2026-01-05T12:00:03Z")),
            pod_result(pod("p-1", message=first, reason="Error", exit_code=1)),
            pod_result(pod("other", job_name="someone-else", message=second))]
    run = run_of(job_result(job()), pods, SOON)
    assert run is not None
    assert run.outcome == SUCCEEDED
    assert run.counts == {"processed": 7}
    assert run.stage_errors["classify"] == StageErrors(3, "second")


def test_pod_lagging_behind_its_job_is_waited_for() -> None:
    lagging = [pod_result(pod(terminated=False))]
    assert run_of(job_result(job()), lagging, SOON) is None
    run = run_of(job_result(job()), lagging, LATER)
    assert run is not None
    assert run.reason == "NoReport"


def test_truncated_report_is_flagged() -> None:
    errors = {f"stage{i}": StageErrors(i + 1, "x" * 300) for i in range(40)}
    text = report(stage_errors=errors)
    assert len(text.encode()) <= 4096
    run = run_of(job_result(job()), [pod_result(pod(message=text))], SOON)
    assert run is not None
    assert run.truncated


# What the kubelet wrote for a pod of the cluster tier whose container runc could not create.
RUNC_FREEZE = ("failed to create containerd task: failed to create shim task: OCI runtime create"
               " failed: runc create failed: unable to start container process: error during"
               " container init: error setting cgroup config for procHooks process: unable to"
               " freeze")


def test_a_container_that_never_started_left_no_report_and_its_replacement_is_the_run() -> None:
    """A StartError pod's message is the runtime's, not a report: the pod the Job controller
    started in its place (the pod failure policy) decides the run."""
    never = pod_result(pod("p-1", message=RUNC_FREEZE, reason="StartError", exit_code=128))
    assert never.message is None and never.runtime_message == RUNC_FREEZE
    replacement = pod_result(pod("p-2", message=report(counts={"processed": 4}),
                                 created="2026-01-05T12:00:11Z"))
    run = run_of(job_result(job()), [never, replacement], SOON)
    assert run is not None
    assert (run.outcome, run.reason, run.counts) == (SUCCEEDED, None, {"processed": 4})


def test_a_container_that_could_never_start_fails_at_the_deadline_naming_the_start_error(
        ) -> None:
    pods = [pod_result(pod(f"p-{i}", message=RUNC_FREEZE, reason="StartError", exit_code=128,
                           created=f"2026-01-05T12:00:{10 * i:02d}Z")) for i in range(3)]
    failed = job_result(job(failed=True, reason="DeadlineExceeded",
                            message="Job was active longer than specified deadline"))
    run = run_of(failed, pods, SOON)
    assert run is not None
    assert (run.outcome, run.reason) == (FAILED, "DeadlineExceeded")
    assert "p-2: StartError (exit code 128): failed to create containerd task" in (
        run.message or ""), run.message
    assert len(run.message or "") <= 1024
    # Without the policy (or on an API server that ignores it) the Job fails at once.
    once = run_of(job_result(job(failed=True, reason="BackoffLimitExceeded")), pods[:1], SOON)
    assert once is not None and once.reason == "StartError"
    assert "unable to freeze" in (once.message or "")


def test_a_deadline_message_names_no_pod_that_ran() -> None:
    """Only a start error is added to the deadline's message: a pod that ran and was stopped
    by the deadline is not described as having left no report."""
    stopped = pod_result(pod(message=report(RunStatus.FAILED, reason="terminated"),
                             reason="Error", exit_code=1))
    failed = job_result(job(failed=True, reason="DeadlineExceeded", message="too long"))
    run = run_of(failed, [stopped], SOON)
    assert run is not None and (run.reason, run.message) == ("DeadlineExceeded", "too long")


def test_a_start_error_carrying_a_secret_is_masked() -> None:
    leaked = pod_result(pod(message="mount failed: postgresql://app:hunter2@db:5432/x",
                            reason="StartError", exit_code=128))
    assert "hunter2" not in (leaked.runtime_message or "x hunter2")


def test_a_container_the_kubelet_lost_is_not_an_invalid_report() -> None:
    """The kubelet writes its own text for a container it could not find any more."""
    lost = pod_result(pod(message="The container could not be located when the pod was"
                                  " deleted.  The container used to be Running",
                          reason="ContainerStatusUnknown", exit_code=137))
    run = run_of(job_result(job(failed=True, reason="BackoffLimitExceeded")), [lost], SOON)
    assert run is not None
    assert (run.outcome, run.reason) == (FAILED, "ContainerStatusUnknown")
    assert "could not be located" in (run.message or "")
