"""What the schema cannot check: schedules, time zones, deadlines against recover's threshold."""

from __future__ import annotations

from typing import Any

import pytest
from operator_helpers import NOW, crontask_spec

from crontask_operator.spec import parse_spec
from crontask_operator.validation import DELETE, SUSPEND, Refusal, Timing, resolve


def run(task: str = "process", name: str = "t", recover_stale: int | None = None,
        **extra: Any) -> Timing | Refusal:
    return resolve(name, parse_spec(crontask_spec(task, **extra)), NOW, recover_stale)


@pytest.mark.parametrize("task", ["detect-stuck", "recover-stuck"])
def test_retired_tasks_are_answered_with_task_gone(task: str) -> None:
    refusal = run(task)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "TaskGone"
    assert "'recover'" in refusal.message
    assert refusal.action == DELETE


@pytest.mark.parametrize("schedule", ["* * * * * *", "61 * * * *", "@often", "TZ=UTC 0 * * * *",
                                      "every five minutes"])
def test_invalid_schedules(schedule: str) -> None:
    refusal = run(schedule=schedule)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "InvalidSchedule"


def test_invalid_time_zone() -> None:
    refusal = run(timeZone="Mars/Olympus_Mons")
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "InvalidSchedule"
    assert "Mars/Olympus_Mons" in refusal.message


def test_name_too_long_for_the_cronjob_suffix() -> None:
    refusal = run(name="x" * 53)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "NameTooLong"
    assert isinstance(run(name="x" * 52), Timing)


def test_deadline_defaults_end_before_the_next_slot() -> None:
    timing = run("decay", schedule="0 * * * *")
    assert isinstance(timing, Timing)
    assert timing.shortest_interval == 3600
    assert timing.active_deadline_seconds == 3600 - 300
    assert timing.starting_deadline_seconds == 3600
    every5 = run("recover", schedule="*/5 * * * *")
    assert isinstance(every5, Timing)
    assert every5.active_deadline_seconds == 270
    assert every5.starting_deadline_seconds == 300


def test_starting_deadline_is_clamped_for_rare_schedules() -> None:
    timing = run("decay", schedule="0 3 * * *")
    assert isinstance(timing, Timing)
    assert timing.starting_deadline_seconds == 3600


def test_process_deadline_stays_below_recover_threshold() -> None:
    timing = run("process", schedule="0 * * * *")
    assert isinstance(timing, Timing)
    assert timing.active_deadline_seconds == 1800 - 180
    tighter = run("process", schedule="0 * * * *", recover_stale=600)
    assert isinstance(tighter, Timing)
    assert tighter.active_deadline_seconds == 600 - 60


def test_process_deadline_at_or_above_threshold_is_refused() -> None:
    refusal = run("process", schedule="0 * * * *", activeDeadlineSeconds=1800)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "DeadlineBeyondRecovery"
    refusal = run("process", schedule="0 * * * *", activeDeadlineSeconds=900, recover_stale=900)
    assert isinstance(refusal, Refusal)
    assert refusal.reason == "DeadlineBeyondRecovery"
    ok = run("process", schedule="0 * * * *", activeDeadlineSeconds=1200)
    assert isinstance(ok, Timing)
    assert ok.active_deadline_seconds == 1200


def test_stage_timeouts_must_stay_below_threshold() -> None:
    refusal = run("process", process={"stageTimeouts": {"summarise": "45m"}})
    assert isinstance(refusal, Refusal)
    assert "stageTimeouts.summarise" in refusal.message
    assert refusal.action == SUSPEND


def test_deadline_longer_than_interval_with_forbid_warns() -> None:
    timing = run("decay", schedule="*/10 * * * *", activeDeadlineSeconds=1200)
    assert isinstance(timing, Timing)
    assert timing.active_deadline_seconds == 1200
    assert timing.warnings
    assert "skips the next slots" in timing.warnings[0]
    allowed = run("decay", schedule="*/10 * * * *", activeDeadlineSeconds=1200,
                  concurrencyPolicy="Allow")
    assert isinstance(allowed, Timing)
    assert not allowed.warnings
