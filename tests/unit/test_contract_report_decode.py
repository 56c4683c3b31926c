"""Decoding a termination message: total over every text a pod can write.

Invariants (Hypothesis): ``decode`` never raises anything but ReportError, for any text or any
JSON document; it is deterministic; whatever it accepts re-encodes and decodes to the same report
and carries only bounded, JSON-safe values (counts are int64 integers, timings finite numbers).
The hostile messages of issue 8 are kept as explicit regression examples.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crontask_contract.report import (
    MAX_COUNT,
    ReportError,
    RunReport,
    RunStatus,
    StageErrors,
    StageTiming,
    decode,
    encode,
)

VALID = {"v": 1, "task": "process", "status": "completed"}


def with_(**fields: Any) -> str:
    return json.dumps({**VALID, **fields})


HOSTILE = {
    "not JSON": "Traceback (most recent call last): boom",
    "empty": "",
    "NaN count": '{"v":1,"task":"p","status":"completed","counts":{"a":NaN}}',
    "Infinity timing": '{"v":1,"task":"p","status":"completed",'
                       '"stage_timings":{"s":{"n":1,"total_ms":Infinity,"max_ms":1}}}',
    "overflowing float": '{"v":1,"task":"p","status":"completed",'
                         '"stage_timings":{"s":{"n":1,"total_ms":1e999,"max_ms":1}}}',
    "beyond int64": with_(counts={"a": 2**63}),
    "5000 digits": "1" * 5000,
    "deep nesting": "[" * 1990,
    "deep objects": '{"a":' * 500 + "1" + "}" * 500,
    "stage_errors as a list": with_(stage_errors=[["a"]]),
    "stage_errors entry not an object": with_(stage_errors={"s": [1, 2]}),
    "version true": json.dumps({**VALID, "v": True}),
    "version 1.0": json.dumps({**VALID, "v": 1.0}),
    "version 2": json.dumps({**VALID, "v": 2}),
    "no version": json.dumps({"task": "p", "status": "completed"}),
    "negative count": with_(counts={"processed": -1}),
    "float count": with_(counts={"processed": 1.0}),
    "bool count": with_(counts={"processed": True}),
    "string count": with_(counts={"processed": "3"}),
    "unknown status": with_(status="exploded"),
    "status not a string": with_(status=7),
    "4 KiB of unicode": "é" * 2048,
    "4 KiB of unicode in a field": with_(error="é" * 4096),
    "lone surrogate": '{"v":1,"task":"\\ud800","status":"completed"}',
    "too many stages": with_(stage_errors={f"s{i}": {"count": 1} for i in range(65)}),
    "top level array": "[1, 2, 3]",
    "top level string": '"completed"',
    "truncated not a bool": with_(truncated="yes"),
    "negative timing": with_(stage_timings={"s": {"n": 1, "total_ms": -1, "max_ms": 0}}),
    "huge text": "x" * 100_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_messages_raise_report_error_only(text: str) -> None:
    with pytest.raises(ReportError) as info:
        decode(text)
    assert len(str(info.value)) <= 200, "the error is short: it may end up in a status"


@pytest.mark.parametrize("value", [None, b'{"v":1}', 1, ["x"], {"v": 1}])
def test_non_text_is_refused(value: Any) -> None:
    with pytest.raises(ReportError):
        decode(value)


def test_encoded_reports_round_trip() -> None:
    report = RunReport(task="process", status=RunStatus.FAILED, reason="db_error", error="x",
                       counts={"processed": 3, "failed": MAX_COUNT},
                       stage_errors={"summarise": StageErrors(2, "no messages")},
                       stage_timings={"summarise": StageTiming(3, 1.5, 1.0)})
    assert decode(encode(report)) == report


def test_null_optional_fields_are_absent() -> None:
    report = decode(with_(reason=None, counts=None, stage_errors=None, truncated=None))
    assert report.reason is None and report.counts == {} and not report.truncated


def test_unknown_fields_are_ignored() -> None:
    assert decode(with_(host="pod-1", extra={"nested": [1]})).status is RunStatus.COMPLETED


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["v", "task", "status", "reason", "error", "execution_id",
                               "started_at", "finished_at", "counts", "stage_errors",
                               "stage_timings", "truncated", "n", "count", "last", "total_ms",
                               "max_ms", "other"])
report_like = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**65), max_value=2**65)
    | st.floats() | st.sampled_from(["completed", "skipped", "failed", "x", ""]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(field_names | st.text(max_size=6), children, max_size=6),
    max_leaves=25,
).map(lambda d: {**VALID, **d} if isinstance(d, dict) else d)


def check_accepted(report: RunReport) -> None:
    """What decode accepts is bounded and JSON-safe, and round-trips."""
    for value in report.counts.values():
        assert type(value) is int and 0 <= value <= MAX_COUNT
    for errors in report.stage_errors.values():
        assert type(errors.count) is int and 0 <= errors.count <= MAX_COUNT
    for timing in report.stage_timings.values():
        assert math.isfinite(timing.total_ms) and math.isfinite(timing.max_ms)
    json.dumps(report.to_dict(), allow_nan=False).encode("utf-8")
    assert decode(json.dumps(report.to_dict())) == report


@given(st.text(max_size=300))
def test_any_text_decodes_or_raises_report_error(text: str) -> None:
    try:
        report = decode(text)
    except ReportError:
        return
    check_accepted(report)


@given(json_values)
def test_any_json_document_decodes_or_raises_report_error(value: Any) -> None:
    text = json.dumps(value)
    try:
        first = decode(text)
    except ReportError:
        with pytest.raises(ReportError):
            decode(text)  # deterministic
        return
    assert decode(text) == first
    check_accepted(first)


@given(report_like)
def test_report_shaped_documents_decode_or_raise_report_error(value: Any) -> None:
    try:
        report = decode(json.dumps(value))
    except ReportError:
        return
    check_accepted(report)


@given(st.integers(min_value=0, max_value=40), st.sampled_from(["[", "{\"a\":"]))
def test_nesting_is_bounded_without_recursion(depth: int, opener: str) -> None:
    text = opener * depth
    with pytest.raises(ReportError):
        decode(text)
