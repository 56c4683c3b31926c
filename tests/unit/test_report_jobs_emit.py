"""The report a job emits fits a termination message whatever the number of errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crontask_contract.report import (
    INT64_MAX,
    MAX_ENTRIES,
    MAX_MESSAGE_CHARS,
    MAX_REPORT_BYTES,
    RunReport,
    RunStatus,
    StageErrors,
    StageTiming,
    decode,
    encode,
)
from crontask_jobs.reporting import emit


def test_many_long_errors_still_fit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = RunReport(
        task="process", status=RunStatus.COMPLETED, execution_id="x" * 36,
        counts={"detected": 10**6, "claimed": 10, "processed": 3, "failed": 7, "deferred": 999990},
        stage_errors={f"stage_{i}": StageErrors(i + 1, "é" * 2000) for i in range(200)},
        stage_timings={f"stage_{i}": StageTiming(10, 1234.5, 99.9) for i in range(200)},
    )
    path = tmp_path / "termination-log"
    text = emit(report, str(path))
    assert len(path.read_bytes()) <= MAX_REPORT_BYTES
    assert path.read_text() == text
    assert capsys.readouterr().out.strip().splitlines()[-1] == text
    back = decode(text)
    assert back.truncated
    assert back.counts == report.counts
    assert back.status is RunStatus.COMPLETED


def test_unwritable_report_file_is_not_fatal(capsys: pytest.CaptureFixture[str]) -> None:
    text = emit(RunReport(task="decay", status=RunStatus.SKIPPED, reason="recent_execution"),
                "/nonexistent-dir/termination-log")
    assert capsys.readouterr().out.strip() == text


# Invariants of `encode`, for any report the jobs could build (any text, including lone
# surrogates and control characters; any count; any float): the output is valid JSON (no NaN,
# encodable as UTF-8), never over 4096 bytes, deterministic, keeps task and status, carries
# counts only as non-negative int64, and is a fixed point of decode-then-encode.

HOSTILE_CHARS = st.one_of(st.characters(), st.sampled_from(
    ["\ud800", "\udfff", "\x00", "\n", "\"", "\\", "é", "𝄞", "\u2028"]))
TEXT = st.text(HOSTILE_CHARS, max_size=400)
LONG_TEXT = st.one_of(TEXT, st.builds(lambda c, n: c * n, HOSTILE_CHARS, st.integers(0, 5000)))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def reports(counts: st.SearchStrategy[int]) -> st.SearchStrategy[RunReport]:
    return st.builds(
        RunReport,
        task=LONG_TEXT, status=st.sampled_from(list(RunStatus)),
        reason=st.none() | LONG_TEXT, error=st.none() | LONG_TEXT,
        execution_id=st.none() | TEXT, started_at=st.none() | TEXT,
        finished_at=st.none() | TEXT,
        counts=st.dictionaries(TEXT, counts, max_size=100),
        stage_errors=st.dictionaries(LONG_TEXT, st.builds(StageErrors, counts, LONG_TEXT),
                                     max_size=30),
        stage_timings=st.dictionaries(TEXT, st.builds(StageTiming, counts, FLOATS, FLOATS),
                                      max_size=30),
        truncated=st.booleans(),
    )


def _no_constants(name: str) -> object:
    raise AssertionError(f"not JSON: {name}")


@settings(max_examples=100)
@given(reports(st.integers()))
def test_encode_is_always_valid_bounded_json(report: RunReport) -> None:
    text = encode(report)
    assert len(text.encode("utf-8")) <= MAX_REPORT_BYTES
    data = json.loads(text, parse_constant=_no_constants)
    assert isinstance(data, dict)
    assert data["v"] == 1
    assert data["status"] == str(report.status)
    for value in dict(data.get("counts", {})).values():
        assert type(value) is int
        assert 0 <= value <= INT64_MAX
    for stage in dict(data.get("stage_errors", {})).values():
        assert len(stage["last"]) <= MAX_MESSAGE_CHARS
    assert len(data.get("error") or "") <= MAX_MESSAGE_CHARS
    assert encode(report) == text


@settings(max_examples=100)
@given(reports(st.integers()))
def test_encode_is_a_fixed_point_of_decode(report: RunReport) -> None:
    text = encode(report)
    back = decode(text)  # the operator's strict decoder accepts whatever encode writes
    assert back.status is report.status
    assert encode(back) == text


def test_a_small_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="at least"):
        encode(RunReport(task="decay", status=RunStatus.SKIPPED), max_bytes=100)


def test_hostile_values_are_made_safe() -> None:
    report = RunReport(task="process\ud800", status=RunStatus.FAILED, reason="error",
                       error="x" * 10_000,
                       counts={"processed": -5, "huge": 10**30, "flag": True},
                       stage_timings={"s": StageTiming(1, float("nan"), float("inf"))})
    data = json.loads(encode(report), parse_constant=_no_constants)
    assert data["task"] == "process\ufffd"
    assert data["counts"] == {"processed": 0, "huge": INT64_MAX, "flag": 1}
    assert data["stage_timings"]["s"] == {"n": 1, "total_ms": 0.0, "max_ms": 0.0}
    assert len(data["error"]) == MAX_MESSAGE_CHARS


def test_more_entries_than_decode_accepts_are_cut_to_the_most_important() -> None:
    report = RunReport(task="process", status=RunStatus.COMPLETED,
                       counts={f"c{i:03}": i for i in range(100)},
                       stage_errors={f"s{i:03}": StageErrors(i, "e") for i in range(100)})
    back = decode(encode(report))
    assert back.truncated
    assert len(back.counts) <= MAX_ENTRIES and len(back.stage_errors) <= MAX_ENTRIES
    assert "s099" in back.stage_errors  # the stage with the most errors is kept
