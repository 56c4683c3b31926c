"""Per-CronTask metrics for alerting (issue 10.4): read from the status, bounded, gone with the
CronTask, exported by the replica that acts; and the operator's own stage label bounded."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from operator_helpers import World
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from crontask_operator import taskmetrics
from crontask_operator.leader import NotLeading
from crontask_operator.metrics import MAX_STAGE_LABELS, OTHER_STAGE, Metrics
from crontask_operator.taskmetrics import SERIES_PER_CRONTASK, TASKS, task_series

STATUS: dict[str, Any] = {
    "lastSuccessfulTime": "2026-01-05T11:00:05Z",
    "lastFailureTime": "2026-01-05T12:00:05Z",
    "succeededRuns": 7, "skippedRuns": 2, "failedRuns": 1, "missedRuns": 1,
    "lastRun": {"jobName": "p-1", "outcome": "Failed", "completionTime": "2026-01-05T12:00:05Z",
                "stageErrorCount": 2},
    "recentRuns": [{"jobName": "p-1", "outcome": "Failed", "stageErrorCount": 2},
                   {"jobName": "p-0", "outcome": "Succeeded", "stageErrorCount": 1},
                   {"jobName": "p-x", "outcome": "Succeeded", "stageErrorCount": 0}],
    "conditions": [{"type": "Ready", "status": "True"}, {"type": "Healthy", "status": "False"}],
}
BODY = {"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"task": "process", "suspend": False}, "status": STATUS}


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples
            if s.name.startswith("crontask_") and not s.name.startswith("crontask_operator_")}


def of(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
       **labels: str) -> float | None:
    for (metric, got), value in found.items():
        if metric == name and labels.items() <= dict(got).items():
            return value
    return None


def test_a_status_becomes_the_alerting_series() -> None:
    metrics = Metrics()
    metrics.crontasks.set(task_series("ns", "p", BODY, interval=300))
    found = samples(metrics)
    labels = {"namespace": "ns", "crontask": "p", "task": "process"}
    assert of(found, "crontask_last_success_timestamp_seconds", **labels) == 1767610805
    assert of(found, "crontask_last_failure_timestamp_seconds", **labels) == 1767614405
    assert of(found, "crontask_last_run_timestamp_seconds", **labels) == 1767614405
    assert of(found, "crontask_last_run_outcome", outcome="Failed", **labels) == 1
    assert of(found, "crontask_last_run_outcome", outcome="Succeeded", **labels) == 0
    assert of(found, "crontask_last_run_stage_errors", **labels) == 2
    assert of(found, "crontask_recent_runs", **labels) == 3
    assert of(found, "crontask_recent_runs_with_stage_errors", **labels) == 2
    assert of(found, "crontask_runs_total", outcome="Succeeded", **labels) == 7
    assert of(found, "crontask_runs_total", outcome="Skipped", **labels) == 2
    assert of(found, "crontask_runs_total", outcome="Failed", **labels) == 1
    assert of(found, "crontask_missed_runs_total", **labels) == 1
    assert of(found, "crontask_schedule_interval_seconds", **labels) == 300
    assert of(found, "crontask_created_timestamp_seconds", **labels) == 1767225600
    assert of(found, "crontask_suspended", **labels) == 0
    assert of(found, "crontask_ready", **labels) == 1
    assert len(found) == SERIES_PER_CRONTASK


def test_a_new_crontask_has_only_what_it_knows() -> None:
    metrics = Metrics()
    metrics.crontasks.set(task_series("ns", "new", {"spec": {"task": "decay", "suspend": True}}))
    found = samples(metrics)
    names = {name for name, _ in found}
    assert "crontask_last_success_timestamp_seconds" not in names
    assert "crontask_last_run_outcome" not in names
    assert "crontask_schedule_interval_seconds" not in names
    assert of(found, "crontask_suspended", crontask="new") == 1
    assert of(found, "crontask_runs_total", crontask="new", outcome="Succeeded") == 0


def test_series_leave_with_their_crontask() -> None:
    metrics = Metrics()
    for name in ("a", "b"):
        metrics.crontasks.set(task_series("ns", name, BODY, interval=60))
    metrics.crontasks.remove("ns", "a")
    assert {dict(labels)["crontask"] for _, labels in samples(metrics)} == {"b"}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=20), children, max_size=6), max_leaves=25)
statuses = st.fixed_dictionaries({}, optional={
    k: json_values | st.just(v) for k, v in STATUS.items()})


@given(st.one_of(json_values, st.fixed_dictionaries(
    {"metadata": json_values, "spec": json_values | st.just(BODY["spec"]), "status": statuses})),
    st.none() | st.integers(-10, 10**12) | st.booleans())
def test_any_crontask_gives_bounded_finite_series(body: Any, interval: Any) -> None:
    series = task_series("ns", "x", body, interval)
    assert series.task in (*TASKS, "unknown")
    for value in (series.last_success, series.last_failure, series.last_run, series.created,
                  series.interval, series.last_stage_errors):
        assert value is None or (math.isfinite(value) and value >= 0)
    assert series.last_outcome in (None, *taskmetrics.OUTCOMES)
    assert all(0 <= n < 2**63 for n in series.runs.values())
    assert 0 <= series.recent_runs_with_stage_errors <= series.recent_runs
    metrics = Metrics()
    metrics.crontasks.set(series)
    assert len(samples(metrics)) <= SERIES_PER_CRONTASK
    assert task_series("ns", "x", body, interval) == series, "deterministic"


def test_stage_labels_from_pods_are_bounded() -> None:
    metrics = Metrics()
    labels = [metrics.stage_label(f"stage-{i}") for i in range(MAX_STAGE_LABELS + 10)]
    assert labels[:MAX_STAGE_LABELS] == [f"stage-{i}" for i in range(MAX_STAGE_LABELS)]
    assert set(labels[MAX_STAGE_LABELS:]) == {OTHER_STAGE}
    assert metrics.stage_label("stage-0") == "stage-0"


# -- fed by the controller ------------------------------------------------------------------
def test_reconciles_export_and_deletion_removes() -> None:
    world = World()
    world.add_crontask("p")
    world.add_crontask("q")
    world.reconcile("p")
    world.reconcile("q")
    metrics = world.controller.metrics
    found = samples(metrics)
    assert of(found, "crontask_schedule_interval_seconds", crontask="p") == 300
    assert of(found, "crontask_ready", crontask="p") == 1
    world.add_job("p-1", "p", failed=True, exit_code=3)
    world.deliver()
    world.reconcile("p")
    found = samples(metrics)
    assert of(found, "crontask_last_run_outcome", crontask="p", outcome="Failed") == 1
    assert of(found, "crontask_runs_total", crontask="p", outcome="Failed") == 1
    world.delete("CronTask", "p")
    world.deliver()
    assert world.reconcile("p") == "gone"
    assert {dict(labels)["crontask"] for _, labels in samples(metrics)} == {"q"}


def test_a_refused_crontask_is_not_ready_and_has_no_interval() -> None:
    world = World()
    world.add_crontask("p", schedule="not a schedule")
    world.reconcile("p")
    found = samples(world.controller.metrics)
    assert of(found, "crontask_ready", crontask="p") == 0
    assert of(found, "crontask_schedule_interval_seconds", crontask="p") is None


def test_a_worker_that_may_not_write_stops_and_writes_nothing() -> None:
    """The fence (leader election): once this replica may not act, its workers stop at their
    next write instead of retrying, and nothing is written."""
    world = World()
    key = world.add_crontask()
    ctl = world.controller

    async def refuse(*_: Any, **__: Any) -> Any:
        raise NotLeading("lost the Lease")
    world.check_create = refuse  # type: ignore[method-assign]

    async def go() -> None:
        ctl.start()
        ctl.enqueue(key, "crontask")
        for _ in range(200):
            await asyncio.sleep(0.01)
            if any(t.done() for t in ctl._workers):
                break
        await ctl.stop()
    asyncio.run(go())
    assert world.writes() == []
    assert ctl.queue.delayed == 0, "no retry is scheduled"


def test_a_new_leader_queues_every_crontask() -> None:
    world = World()
    for name in ("a", "b", "c"):
        world.add_crontask(name)
    ctl = world.controller
    while len(ctl.queue):
        key, _ = asyncio.run(ctl.queue.get())
        ctl.queue.done(key)
    assert ctl.enqueue_all("leader") == 3
    assert sorted(ctl.queue._queue) == [("ns", "a"), ("ns", "b"), ("ns", "c")]
