"""One reconcile of a CronTask, through the controller, against a fake API server and caches.

The pure decisions run for real; only the API server is a recording fake (``World``). Each test
names the behaviour of issue 8 or 10 it pins; the cluster tier repeats the important ones
against a real API server and node.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json

import pytest
from operator_helpers import NOW, World, condition

from crontask_contract.report import RunReport, RunStatus, StageErrors, encode
from crontask_operator import schemacheck
from crontask_operator.crd import status_schema
from crontask_operator.cronjob import APPLIED_HASH
from crontask_operator.kube import Stale


def report(status: RunStatus = RunStatus.COMPLETED, **extra: object) -> str:
    return encode(RunReport(task="process", status=status, **extra))  # type: ignore[arg-type]


def valid(world: World, name: str = "process") -> None:
    assert schemacheck.errors(world.status(name), status_schema()) == []


def test_create_applies_cronjob_and_sets_ready() -> None:
    world = World()
    world.add_crontask()
    assert world.reconcile() == "ok"
    assert world.writes() == [("create-dry-run", "process"), ("apply", "process"),
                              ("status", "process")]
    status = world.status()
    assert condition(status, "Ready")["status"] == "True"
    assert status["cronJobName"] == "process"
    assert status["nextScheduleTime"] == "2026-01-05T12:05:00Z"
    assert status["observedGeneration"] == 1
    assert condition(status, "Healthy")["reason"] == "NoRunYet"
    valid(world)


def test_a_no_op_reconcile_writes_nothing() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.calls.clear()
    assert world.reconcile() == "ok"
    assert world.calls == []


def test_a_reconcile_before_the_watch_caught_up_writes_nothing() -> None:
    """Read-your-writes: the next reconcile uses the responses of our own writes."""
    world = World()
    world.add_crontask()
    world.reconcile(deliver=False)
    world.calls.clear()
    world.reconcile(deliver=False)
    assert world.calls == []


def test_a_stale_status_is_refused_not_double_counted() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.stale_once = True
    world.add_job("process-1", message=report())
    world.deliver()
    with pytest.raises(Stale):
        world.reconcile()
    world.reconcile()
    assert world.status()["succeededRuns"] == 1


def test_hand_edit_is_repaired_with_a_warning() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.edit_cronjob("process", lambda cj: cj["spec"].update(schedule="0 0 * * *"))
    world.deliver()
    world.reconcile()
    assert world.cronjob()["spec"]["schedule"] == "*/5 * * * *"  # type: ignore[index]
    assert ("Warning", "DriftRepaired") in [(t, r) for t, r, _ in world.events]


def test_hand_deletion_is_repaired_with_a_warning() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.delete("CronJob", "process")
    world.deliver()
    world.reconcile()
    assert world.cronjob() is not None
    assert [m for t, r, m in world.events if r == "DriftRepaired"] == [
        "CronJob process was deleted by hand; restored from the spec"]


def test_a_removed_field_is_applied_although_the_rest_still_matches() -> None:
    world = World()
    world.add_crontask(ttlSecondsAfterFinished=600)
    world.reconcile()
    body = world.crontask()
    del body["spec"]["ttlSecondsAfterFinished"]
    world.set_spec("process")
    world.deliver()
    world.calls.clear()
    world.reconcile()
    assert ("apply", "process") in world.calls
    assert "ttlSecondsAfterFinished" not in world.cronjob()["spec"]["jobTemplate"]["spec"]  # type: ignore[index]
    assert "DriftRepaired" not in [r for _, r, _ in world.events]


def test_foreign_unlabelled_cronjob_is_left_alone() -> None:
    world = World()
    world.objects[("CronJob", "ns", "process")] = {
        "metadata": {"name": "process", "namespace": "ns", "uid": "theirs",
                     "resourceVersion": "1"}, "spec": {"schedule": "1 1 * * *"}}
    world.add_crontask()
    assert world.reconcile() == "conflict"
    assert ("apply", "process") not in world.calls
    assert condition(world.status(), "Ready")["reason"] == "CronJobConflict"
    assert world.cronjob()["spec"] == {"schedule": "1 1 * * *"}  # type: ignore[index]


def test_foreign_labelled_cronjob_is_left_alone() -> None:
    world = World()
    world.objects[("CronJob", "ns", "process")] = {
        "metadata": {"name": "process", "namespace": "ns", "uid": "theirs",
                     "resourceVersion": "1", "labels": {"crontask.dev/crontask": "process"}},
        "spec": {"schedule": "1 1 * * *"}}
    world.add_crontask()
    assert world.reconcile() == "conflict"
    assert world.writes() == [("status", "process")]
    assert [r for t, r, _ in world.events] == ["CronJobConflict"]


def test_retired_task_removes_cronjob_and_warns_once() -> None:
    world = World()
    world.add_crontask("legacy", "recover")
    world.reconcile("legacy")
    world.set_spec("legacy", task="detect-stuck")
    world.deliver()
    world.reconcile("legacy")
    world.reconcile("legacy")
    assert world.cronjob("legacy") is None
    cond = condition(world.status("legacy"), "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "TaskGone")
    assert "'recover'" in cond["message"]
    assert cond["observedGeneration"] == 2
    assert [r for t, r, _ in world.events if t == "Warning"] == ["TaskGone"]
    assert "nextScheduleTime" not in world.status("legacy")


def test_a_refused_spec_suspends_the_cronjob_until_it_is_fixed() -> None:
    """Issue 8.5: a recover threshold below the process stage timeout refuses the process
    CronTask; its CronJob must not keep running with the old deadline."""
    world = World()
    world.add_crontask("process", process={"stageTimeout": "10m"})
    world.reconcile()
    assert world.cronjob()["spec"]["suspend"] is False  # type: ignore[index]
    world.add_crontask("recover", "recover", recover={"staleAfter": "5m"})
    world.reconcile()
    cond = condition(world.status(), "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "DeadlineBeyondRecovery")
    assert "CronJob process is suspended until the spec is fixed" in cond["message"]
    assert world.cronjob()["spec"]["suspend"] is True  # type: ignore[index]
    assert "nextScheduleTime" not in world.status()
    world.calls.clear()
    world.reconcile()
    assert world.writes() == [], "a refusal is stable: no write per resync"
    world.set_spec("process", process={"stageTimeout": "1m"})
    world.deliver()
    world.reconcile()
    assert world.cronjob()["spec"]["suspend"] is False  # type: ignore[index]
    assert condition(world.status(), "Ready")["status"] == "True"
    assert "DriftRepaired" not in [r for _, r, _ in world.events]


@pytest.mark.parametrize(("change", "reason"), [
    ({"schedule": "61 * * * *"}, "InvalidSchedule"),
    ({"resources": {"limits": {"memory": "1e999999999"}}}, "InvalidSpec"),
    ({"timeZone": "Mars/Olympus_Mons"}, "InvalidSchedule"),
    ({"successfulJobsHistoryLimit": "three"}, "InvalidSpec"),
])
def test_every_refusal_suspends_and_says_so(change: dict[str, object], reason: str) -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.set_spec("process", **change)
    world.deliver()
    assert world.reconcile() == "refused"
    cond = condition(world.status(), "Ready")
    assert (cond["status"], cond["reason"]) == ("False", reason)
    assert cond["message"].endswith("CronJob process is suspended until the spec is fixed.")
    assert world.cronjob()["spec"]["suspend"] is True  # type: ignore[index]
    valid(world)


def test_a_refused_new_crontask_creates_nothing() -> None:
    world = World()
    world.add_crontask(schedule="0 0 30 2 *")
    assert world.reconcile() == "refused"
    assert world.cronjob() is None
    assert condition(world.status(), "Ready")["message"].endswith(
        "No CronJob runs until the spec is fixed.")


def test_server_rejection_is_a_refusal_that_suspends() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.set_spec("process", schedule="*/10 * * * *")
    world.deliver()
    world.reject = 'CronJob.batch "process" is invalid: spec.foo: Invalid value'
    assert world.reconcile() == "rejected"
    cond = condition(world.status(), "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "CronJobRejected")
    assert "spec.foo: Invalid value" in cond["message"]
    assert world.cronjob()["spec"]["suspend"] is True  # type: ignore[index]


def test_runs_are_folded_once_with_events() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.add_job("process-1", message=report(
        counts={"processed": 2}, stage_errors={"summarise": StageErrors(1, "no messages")}))
    world.deliver()
    world.reconcile()
    world.reconcile()
    status = world.status()
    assert status["succeededRuns"] == 1
    assert status["lastRun"]["stageErrors"]["summarise"]["count"] == 1
    assert status["countedJobs"] == ["job-process-1"]
    assert (condition(status, "Healthy")["status"],
            condition(status, "Healthy")["reason"]) == ("False", "StageErrors")
    assert [r for t, r, _ in world.events] == ["StageErrors"]
    assert condition(status, "Ready")["status"] == "True"
    valid(world)


def test_kept_jobs_beyond_recent_runs_are_never_folded_twice() -> None:
    """Issue 8.1: 10 succeeded + 10 failed Jobs kept by the history limits; failedRuns went
    10 -> 20 -> 30 -> 40 with a RunFailed event per resync."""
    world = World()
    world.add_crontask(successfulJobsHistoryLimit=10, failedJobsHistoryLimit=10)
    world.reconcile()
    for i in range(10):
        world.add_job(f"ok-{i}", message=report(), completion=f"2026-01-05T11:{i:02d}:00Z")
        world.add_job(f"bad-{i}", failed=True, exit_code=3,
                      completion=f"2026-01-05T11:{10 + i:02d}:00Z")
    world.deliver()
    for _ in range(4):
        world.reconcile()
    status = world.status()
    assert (status["succeededRuns"], status["failedRuns"]) == (10, 10)
    assert len(status["recentRuns"]) == 10
    assert len(status["countedJobs"]) == 20
    assert len([r for _, r, _ in world.events if r == "RunFailed"]) == 10


def test_deleting_counted_jobs_changes_no_counter() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    for i in range(3):
        world.add_job(f"ok-{i}", message=report(), completion=f"2026-01-05T11:0{i}:00Z")
    world.deliver()
    world.reconcile()
    world.delete("Job", "ok-0")
    world.delete("Pod", "ok-0-pod")
    world.deliver()
    world.reconcile()
    status = world.status()
    assert status["succeededRuns"] == 3
    assert status["countedJobs"] == ["job-ok-1", "job-ok-2"]
    world.reconcile()
    assert world.status()["succeededRuns"] == 3


def test_a_job_deleted_right_after_it_finished_is_still_counted_once() -> None:
    """A TTL of 0 or a history limit can delete a finished Job before the reconcile runs: the
    last state the watch showed is kept until the run is folded."""
    world = World()
    key = world.add_crontask()
    world.reconcile()
    world.add_job("quick", message=report())
    world.deliver()
    from crontask_operator.outcomes import job_result, pod_result

    job = world.delete("Job", "quick")
    pod = world.delete("Pod", "quick-pod")
    assert job is not None and pod is not None
    world.controller.pod_event(key, "DELETED", pod_result(pod))
    world.controller.job_event(key, "DELETED", job_result(job))
    world.deliver()
    world.reconcile()
    world.reconcile()
    status = world.status()
    assert status["succeededRuns"] == 1
    assert status["countedJobs"] == []
    assert status["lastRun"]["jobName"] == "quick"


def test_a_job_that_finishes_and_goes_while_a_status_is_written_is_not_lost() -> None:
    """Found by the cluster tier (history limit 3, five Jobs finishing at once): a Job seen
    running by a reconcile, finished and deleted while that reconcile wrote its status, must be
    folded by the next reconcile, not dropped with the tombstones the first one accounted for."""
    from crontask_operator.outcomes import job_result, pod_result

    world = World()
    key = world.add_crontask()
    world.reconcile()
    world.add_job("first", message=report())
    world.add_job("second", finished=False, message=report())  # its pod already ended
    world.deliver()
    ctl = world.controller

    def second_finishes_and_goes() -> None:
        world.add_job("second", message=report(), completion="2026-01-05T12:00:06Z")
        job = world.delete("Job", "second")
        pod = world.delete("Pod", "second-pod")
        assert job is not None and pod is not None
        ctl.job_event(key, "DELETED", job_result(job))
        ctl.pod_event(key, "DELETED", pod_result(pod))

    world.during_write.append(second_finishes_and_goes)
    world.reconcile()
    assert world.status()["succeededRuns"] == 1
    world.reconcile()
    world.reconcile()
    status = world.status()
    assert status["succeededRuns"] == 2
    assert status["countedJobs"] == ["job-first"]


def test_status_written_by_an_older_operator_is_migrated_without_double_counting() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.add_job("old-1", message=report())
    world.crontask()["status"].pop("countedJobs")
    world.crontask()["status"].update(succeededRuns=1, recentRuns=[
        {"jobName": "old-1", "outcome": "Succeeded", "stageErrorCount": 0}])
    world.deliver()
    world.reconcile()
    status = world.status()
    assert status["succeededRuns"] == 1
    assert status["countedJobs"] == ["job-old-1"]


HOSTILE = ["Traceback: boom", "[" * 1990, '{"v":1,"task":"p","status":"completed",'
           '"counts":{"a":NaN}}', json.dumps({"v": True, "task": "p", "status": "completed"}),
           json.dumps({"v": 1, "task": "p", "status": "completed", "counts": {"a": 2**64}}),
           json.dumps({"v": 1, "task": "p", "status": "completed", "stage_errors": [["a"]]}),
           "é" * 2048]


@pytest.mark.parametrize("message", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_termination_message_is_a_failed_run(message: str) -> None:
    """Issue 8.3: folded as Failed/InvalidReport, status within the schema, and the other
    CronTask's reconcile goes on."""
    world = World()
    world.add_crontask()
    world.add_crontask("other", "recover")
    world.reconcile()
    world.add_job("evil", message=message, exit_code=0)
    world.deliver()
    world.reconcile()
    status = world.status()
    assert status["failedRuns"] == 1
    assert (status["lastRun"]["outcome"], status["lastRun"]["reason"]) == (
        "Failed", "InvalidReport")
    assert len(status["lastRun"]["message"]) <= 1024
    valid(world)
    assert world.reconcile("other") == "ok"
    assert condition(world.status("other"), "Ready")["status"] == "True"


def test_a_run_whose_job_vanished_unseen_is_reported_missed() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.edit_cronjob("process", lambda cj: cj.__setitem__(
        "status", {"lastScheduleTime": "2026-01-05T11:55:00Z"}))
    world.deliver()
    world.reconcile()  # first sight: the watermark only
    assert world.status()["lastScheduleTime"] == "2026-01-05T11:55:00Z"
    world.edit_cronjob("process", lambda cj: cj.__setitem__(
        "status", {"lastScheduleTime": "2026-01-05T12:00:00Z"}))
    world.deliver()
    world.now = NOW.replace(minute=3)
    world.reconcile()
    status = world.status()
    assert status["missedRuns"] == 1
    assert status["lastScheduleTime"] == "2026-01-05T12:00:00Z"
    assert [r for _, r, _ in world.events].count("RunsMissed") == 1
    world.reconcile()
    assert world.status()["missedRuns"] == 1


def test_a_job_seen_running_is_not_missed() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.edit_cronjob("process", lambda cj: cj.__setitem__(
        "status", {"lastScheduleTime": "2026-01-05T11:55:00Z"}))
    world.deliver()
    world.reconcile()
    scheduled = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
    name = f"process-{int(scheduled.timestamp()) // 60}"
    world.edit_cronjob("process", lambda cj: cj.__setitem__(
        "status", {"lastScheduleTime": "2026-01-05T12:00:00Z",
                   "active": [{"name": name}]}))
    world.deliver()
    world.reconcile()
    assert "missedRuns" not in world.status()


def test_a_scheduled_job_not_yet_seen_is_waited_for() -> None:
    world = World()
    world.now = NOW.replace(minute=0, second=20)
    world.add_crontask()
    world.reconcile()
    world.edit_cronjob("process", lambda cj: cj.__setitem__(
        "status", {"lastScheduleTime": "2026-01-05T11:55:00Z"}))
    world.deliver()
    world.reconcile()
    world.edit_cronjob("process", lambda cj: cj.__setitem__(
        "status", {"lastScheduleTime": "2026-01-05T12:00:00Z"}))
    world.deliver()
    world.reconcile()
    assert "missedRuns" not in world.status()
    assert world.status()["lastScheduleTime"] == "2026-01-05T11:55:00Z"


def test_events_map_to_keys_and_echoes_are_not_news() -> None:
    world = World()
    key = world.add_crontask()
    ctl = world.controller
    body = world.crontask()
    assert ctl.crontask_event(key, None, body)
    assert not ctl.crontask_event(key, "MODIFIED", body), "status-only change: our echo"
    world.set_spec("process", suspend=True)
    assert ctl.crontask_event(key, "MODIFIED", world.crontask())
    world.deliver()
    world.reconcile()
    assert not ctl.cronjob_event(key, world.cronjob() or {}), "the echo of our apply"
    world.edit_cronjob("process", lambda cj: cj["spec"].update(schedule="1 1 * * *"))
    assert ctl.cronjob_event(key, world.cronjob() or {})


def test_a_recover_change_queues_the_namespaces_process_tasks() -> None:
    world = World()
    world.add_crontask("p1")
    world.add_crontask("p2")
    recover = world.add_crontask("r", "recover")
    ctl = world.controller
    while len(ctl.queue):
        asyncio.run(_drain(ctl))
    ctl.crontask_event(recover, None, world.crontask("r"))
    assert sorted(ctl.queue._queue) == [("ns", "p1"), ("ns", "p2"), ("ns", "r")]


async def _drain(ctl: object) -> None:
    key, _ = await ctl.queue.get()  # type: ignore[attr-defined]
    ctl.queue.done(key)  # type: ignore[attr-defined]


def test_a_deleted_crontask_is_forgotten() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    world.delete("CronTask", "process")
    world.deliver()
    assert world.reconcile() == "gone"


def test_spec_annotation_carries_the_hash() -> None:
    world = World()
    world.add_crontask()
    world.reconcile()
    assert APPLIED_HASH in world.cronjob()["metadata"]["annotations"]  # type: ignore[index]


def test_workers_reconcile_queued_keys_and_count_why() -> None:
    """Through the queue and the workers: an event queues a key, a worker reconciles it, and the
    metrics say what queued it and how it ended (what a scale benchmark reads)."""
    world = World()
    key = world.add_crontask()
    ctl = world.controller

    async def go() -> None:
        ctl.start()
        ctl.crontask_event(key, None, world.crontask())
        for _ in range(200):
            await asyncio.sleep(0.01)
            if world.status().get("cronJobName"):
                break
        await ctl.stop()
    asyncio.run(go())
    assert world.status()["cronJobName"] == "process"
    registry = ctl.metrics.registry
    assert registry.get_sample_value("crontask_operator_reconciles_total",
                                     {"trigger": "crontask", "result": "ok"}) == 1
    assert registry.get_sample_value("crontask_operator_cronjob_applies_total",
                                     {"kind": "created"}) == 1
    assert registry.get_sample_value("crontask_operator_queue_depth") == 0


def test_a_refusal_from_an_added_policy_is_handled_like_every_other() -> None:
    """The extension point for policies such as an image allow-list: a check returning a
    Refusal suspends the existing CronJob and says so, with nothing else to wire."""
    from crontask_operator.validation import Refusal

    world = World()
    world.add_crontask()
    world.reconcile()
    world.controller.checks = (lambda spec, defaults: Refusal(
        "ImageNotAllowed", f"image {spec.image or defaults.image} is not allowed")
        if (spec.image or "").startswith("evil/") else None,)
    world.set_spec("process", image="evil/jobs:1")
    world.deliver()
    assert world.reconcile() == "refused"
    cond = condition(world.status(), "Ready")
    assert (cond["status"], cond["reason"]) == ("False", "ImageNotAllowed")
    assert cond["message"] == ("image evil/jobs:1 is not allowed. CronJob process is suspended"
                               " until the spec is fixed.")
    assert world.cronjob()["spec"]["suspend"] is True  # type: ignore[index]
    world.set_spec("process", image="good/jobs:1")
    world.deliver()
    assert world.reconcile() == "ok"
    assert world.cronjob()["spec"]["suspend"] is False  # type: ignore[index]
