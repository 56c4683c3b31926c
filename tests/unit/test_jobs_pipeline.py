from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crontask_jobs.faults import Fault
from crontask_jobs.pipeline import Stage, StageContext, StageError
from crontask_jobs.pipeline.default import NO_MESSAGES, default_stages, summarise_transcript
from crontask_jobs.pipeline.engine import (
    FINISH_RESULTS,
    RELEASE,
    ROLLBACK_TO,
    ConversationOutcome,
    Script,
    resolve_timeouts,
)
from crontask_jobs.pipeline.loader import PipelineError, load_pipeline
from crontask_jobs.pipeline.stats import StageResult, fold_errors, fold_timings
from crontask_jobs.tasks.process import (
    ProcessOptions,
    build_counts,
    claim_statement,
    phases_ms,
    run_verdict,
)


async def nothing(ctx: StageContext) -> None:
    return None


def not_stages() -> list[int]:
    return [1, 2]


def twins() -> list[Stage]:
    return [Stage("a", nothing), Stage("a", nothing)]


def zero_timeout() -> list[Stage]:
    return [Stage("a", nothing, timeout=timedelta(0))]


def negative_timeout() -> list[Stage]:
    return [Stage("a", nothing, timeout=timedelta(seconds=-1))]


def long_name() -> list[Stage]:
    return [Stage("x" * 65, nothing)]


def newline_name() -> list[Stage]:
    return [Stage("a\nb", nothing)]


def month_timeout() -> list[Stage]:
    return [Stage("a", nothing, timeout=timedelta(days=30))]


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
    (f"{__name__}:zero_timeout", "timeout that is not between"),
    (f"{__name__}:negative_timeout", "timeout that is not between"),
    (f"{__name__}:month_timeout", "timeout that is not between"),
    (f"{__name__}:long_name", "1 to 64 letters"),
    (f"{__name__}:newline_name", "1 to 64 letters"),
])
def test_bad_pipelines_are_configuration_errors(spec: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        load_pipeline(spec)


def test_timeout_precedence() -> None:
    stages = [Stage("own", nothing, timeout=timedelta(seconds=5)), Stage("bare", nothing)]
    assert resolve_timeouts(stages, {}, None) == {"own": 5.0, "bare": 60.0}
    with pytest.raises(ValueError, match="not positive"):  # never silently skipped
        resolve_timeouts([Stage("zero", nothing, timeout=timedelta(0))], {}, None)
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
    errors = fold_errors(results)
    assert set(errors) == {"a"}
    assert (errors["a"].count, errors["a"].last_message) == (2, "y")


def test_counts_name_what_they_count() -> None:
    ok = ConversationOutcome(uuid.uuid4(), "processed", [StageResult("s", 1.0)])
    bad = ConversationOutcome(uuid.uuid4(), "failed", [StageResult("s", 2.0, "boom")], "stage s")
    lost = ConversationOutcome(uuid.uuid4(), "lost", [StageResult("s", 3.0)])
    back = ConversationOutcome(uuid.uuid4(), "handed_back", [StageResult("s", 3.0, "gone")])
    assert build_counts(4, 7, [ok, bad, lost, back]) == {
        "eligible": 11, "claimed": 4, "processed": 1, "failed": 1, "deferred": 7, "lost": 1,
        "handed_back": 1}
    assert build_counts(0, 0, [], slots_failed=2)["slots_failed"] == 2


def test_run_verdict() -> None:
    ok = ConversationOutcome(uuid.uuid4(), "processed")
    failed = ConversationOutcome(uuid.uuid4(), "failed", failure="stage s: boom")
    cut = ConversationOutcome(uuid.uuid4(), "handed_back", failure="stage s: gone",
                              fault=Fault("backend_terminated", "terminating connection"))
    refused = Fault("database_unavailable", "too many clients already")
    # A pipeline's own failures do not fail the run; a fault that cut work short does.
    assert run_verdict([ok, failed], [], 1, False) == (None, None)
    reason, error = run_verdict([ok, cut], [], 1, False)
    assert reason == "backend_terminated"
    assert error == "1 conversation(s) cut short by backend_terminated: terminating connection"
    # Slots that could not connect only fail the run when none ran out of work.
    assert run_verdict([ok], [refused], 1, False) == (None, None)
    assert run_verdict([], [refused], 0, False)[0] == "database_unavailable"
    assert run_verdict([ok], [], 1, True)[0] == "terminated"


moments = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(moments, st.none() | moments, st.none() | moments, st.none() | moments, moments)
def test_a_runs_phases_are_never_negative_and_add_up_to_the_run(
        started: float, first: float | None, ramped: float | None, last: float | None,
        later: float) -> None:
    """Invariants, whatever the clocks say (a claim never made, a ramp never done, an outcome
    never heard): no phase is negative, the four add up to the run's length (to rounding), and
    phases_ms is deterministic."""
    now = started + later
    phases = phases_ms(started, first, ramped, last, now)
    assert list(phases) == ["start", "ramp", "work", "end"]
    assert all(v >= 0 for v in phases.values())
    assert abs(sum(phases.values()) - (now - started) * 1000) <= 2
    assert phases == phases_ms(started, first, ramped, last, now)
    if first is None:
        assert phases["ramp"] == phases["work"] == phases["end"] == 0
    if ramped is None:
        assert phases["ramp"] == 0


def test_a_runs_phases_split_at_the_first_claim_the_ramp_and_the_last_outcome() -> None:
    assert phases_ms(10.0, 10.05, 10.09, 11.25, 11.27) == {
        "start": 50, "ramp": 40, "work": 1160, "end": 20}
    # a ramp that outlasted the work (a slot slow to start, a tiny batch) ends with it
    assert phases_ms(10.0, 10.05, 11.5, 11.25, 11.27) == {
        "start": 50, "ramp": 1200, "work": 0, "end": 20}


# What the stages can leave pending before the final message: per non-critical stage, a release
# of its savepoint, or a rollback to it and the release.
pendings = st.lists(st.sampled_from([(RELEASE,), (ROLLBACK_TO, RELEASE)]), max_size=6).map(
    lambda parts: [statement for part in parts for statement in part])


@given(st.uuids(), st.uuids(), pendings, st.booleans())
def test_a_final_message_carries_the_next_claim_after_its_commit(
        owner: uuid.UUID, conversation: uuid.UUID, pending: list[bytes], claim_next: bool) -> None:
    """The final message runs what the stages left pending, the guarded update and the COMMIT,
    and only then (with `claim_next`) the next claim in a transaction of its own and the next
    opening. `claimed_row` finds the claim's row at the place this pins."""
    script = Script.of(owner, claim_statement(owner, ProcessOptions()), [Stage("a", nothing)],
                       {"a": 1.0})
    sent = script.finish(conversation, pending, claim_next=claim_next)
    assert sent == script.finish(conversation, pending, claim_next=claim_next)  # deterministic
    statements = sent.split(b"; ")
    assert statements[:len(pending)] == pending
    update, commit = statements[len(pending):len(pending) + FINISH_RESULTS]
    assert update == b"%s('%s'::uuid)" % (script.finish_prefix, conversation.hex.encode())
    assert commit == b"COMMIT"
    rest = statements[len(pending) + FINISH_RESULTS:]
    if not claim_next:
        assert rest == []
        return
    assert b"; ".join(rest) == script.claim_and_open
    assert rest[:3] == [b"BEGIN", script.claim, b"COMMIT"]  # the claim commits on its own
    assert rest[3:] == script.opening.split(b"; ")
