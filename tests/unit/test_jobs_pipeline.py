from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from crontask_jobs.pipeline import Stage, StageContext, StageError
from crontask_jobs.pipeline.default import NO_MESSAGES, default_stages, summarise_transcript
from crontask_jobs.pipeline.engine import ConversationOutcome, resolve_timeouts
from crontask_jobs.pipeline.loader import PipelineError, load_pipeline
from crontask_jobs.pipeline.stats import StageResult, fold_errors, fold_timings
from crontask_jobs.tasks.process import build_result


async def nothing(ctx: StageContext) -> None:
    return None


def not_stages() -> list[int]:
    return [1, 2]


def twins() -> list[Stage]:
    return [Stage("a", nothing), Stage("a", nothing)]


def test_default_pipeline_is_the_entry_point() -> None:
    stages = load_pipeline("default")
    assert [s.name for s in stages] == ["load_transcript", "summarise", "touch_user", "persist"]
    assert [s.critical for s in stages] == [True, False, False, True]
    assert all(s.timeout is not None for s in stages)


def test_module_callable_spec() -> None:
    stages = load_pipeline("crontask_jobs.pipeline.default:default_stages")
    assert len(stages) == len(default_stages())


@pytest.mark.parametrize(("spec", "message"), [
    ("nope", "no pipeline named 'nope'"),
    ("no.such.module:x", "cannot import"),
    ("crontask_jobs.pipeline.default:missing", "has no 'missing'"),
    (f"{__name__}:not_stages", "is not a Stage"),
    (f"{__name__}:twins", "repeated"),
])
def test_bad_pipelines_are_configuration_errors(spec: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        load_pipeline(spec)


def test_timeout_precedence() -> None:
    stages = [Stage("own", nothing, timeout=timedelta(seconds=5)), Stage("bare", nothing)]
    assert resolve_timeouts(stages, {}, None) == {"own": 5.0, "bare": 60.0}
    assert resolve_timeouts(stages, {}, timedelta(seconds=9)) == {"own": 5.0, "bare": 9.0}
    assert resolve_timeouts(stages, {"own": timedelta(seconds=1)}, timedelta(seconds=9)) == {
        "own": 1.0, "bare": 9.0}


def test_summary() -> None:
    text = summarise_transcript([("user", "I planted tomatoes today"),
                                 ("assistant", "Lovely, which tomatoes?"),
                                 ("user", "Cherry tomatoes, in pots")])
    assert text.startswith("3 messages (1 assistant, 2 user)")
    assert "opened with: 'I planted tomatoes today'" in text
    assert "topics: tomatoes" in text
    with pytest.raises(StageError, match=NO_MESSAGES):
        summarise_transcript([])


def test_folding_stage_results() -> None:
    results = [StageResult("a", 10.0), StageResult("a", 30.0, "x"), StageResult("b", 5.0),
               StageResult("a", 20.0, "y")]
    timings = fold_timings(results)
    assert (timings["a"].count, timings["a"].total_ms, timings["a"].max_ms) == (3, 60.0, 30.0)
    assert timings["a"].mean_ms == 20.0
    errors = fold_errors(results)
    assert set(errors) == {"a"}
    assert (errors["a"].count, errors["a"].last_message) == (2, "y")


def test_build_result_counts() -> None:
    ok = ConversationOutcome(uuid.uuid4(), "processed", [StageResult("s", 1.0)])
    bad = ConversationOutcome(uuid.uuid4(), "failed", [StageResult("s", 2.0, "boom")], "stage s")
    lost = ConversationOutcome(uuid.uuid4(), "lost", [StageResult("s", 3.0)])
    counts, doc = build_result(3, 7, [ok, bad, lost])
    assert counts == {"detected": 10, "claimed": 3, "processed": 1, "failed": 1, "deferred": 7,
                      "lost": 1}
    assert doc["stage_errors"] == {"s": {"count": 1, "last_message": "boom"}}
    assert doc["stage_timings"]["s"]["count"] == 3
    assert doc["failures"] == [{"conversation_id": str(bad.conversation_id), "reason": "stage s"}]
