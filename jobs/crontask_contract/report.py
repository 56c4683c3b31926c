"""The run report: the one contract between a job pod and the operator.

A job writes its report to the pod's termination message; the operator reads it back from the
Pod's status and folds it into the CronTask's status. Kubernetes caps a termination message at
4096 bytes, so a report must fit whatever the number of errors: `encode` degrades gracefully
(shorter messages, then fewer stages) and marks the report `truncated` rather than fail.

This module imports nothing outside the standard library so that both sides (the jobs image and
the operator image) can depend on it without pulling in the other's stack.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

SCHEMA_VERSION: Final = 1
MAX_REPORT_BYTES: Final = 4096
"""Kubernetes truncates a container's termination message at 4096 bytes."""

MAX_MESSAGE_CHARS: Final = 300
"""The longest error message a report carries before any truncation is needed."""

TASKS: Final = ("recover", "decay", "process")
GONE_TASKS: Final = {"detect-stuck": "recover", "recover-stuck": "recover"}
"""Task names that existed once; asking for them is answered, never run."""


class RunStatus(StrEnum):
    COMPLETED = "completed"
    SKIPPED = "skipped"
    FAILED = "failed"


class SkipReason(StrEnum):
    RECENT_EXECUTION = "recent_execution"
    ALREADY_RUNNING = "already_running"


class ReportError(ValueError):
    """A termination message that is not a run report of a schema version we understand."""


def gone_message(task: str) -> str:
    """The answer to a retired task name, shared by the CLI and the operator."""
    return f"task {task!r} is gone: use {GONE_TASKS[task]!r} instead"


@dataclass(frozen=True)
class StageErrors:
    """How often one pipeline stage failed in a run, and the last thing it said."""

    count: int
    last_message: str


@dataclass(frozen=True)
class StageTiming:
    """How long one pipeline stage took over a run's conversations."""

    count: int
    total_ms: float
    max_ms: float


@dataclass(frozen=True)
class RunReport:
    task: str
    status: RunStatus
    reason: str | None = None
    """Why a run was skipped (a SkipReason) or failed (a short machine-readable word)."""
    error: str | None = None
    """A human-readable error for a failed run."""
    execution_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    counts: Mapping[str, int] = field(default_factory=dict)
    """Task-specific tallies: detected, processed, failed, deferred, recovered, decayed, ..."""
    stage_errors: Mapping[str, StageErrors] = field(default_factory=dict)
    stage_timings: Mapping[str, StageTiming] = field(default_factory=dict)
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": SCHEMA_VERSION, "task": self.task, "status": str(self.status)}
        for key in ("reason", "error", "execution_id", "started_at", "finished_at"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.counts:
            out["counts"] = dict(self.counts)
        if self.stage_errors:
            out["stage_errors"] = {
                name: {"count": e.count, "last": e.last_message}
                for name, e in self.stage_errors.items()
            }
        if self.stage_timings:
            out["stage_timings"] = {
                name: {"n": t.count, "total_ms": round(t.total_ms, 1), "max_ms": round(t.max_ms, 1)}
                for name, t in self.stage_timings.items()
            }
        if self.truncated:
            out["truncated"] = True
        return out


MIN_REPORT_BYTES: Final = 1024
"""The smallest budget `encode` accepts: its last resort always fits in it."""

MAX_NAME_CHARS: Final = 64
"""Task, reason, identifiers, timestamps, count and stage names are clipped to this."""

INT64_MAX: Final = 2**63 - 1
MAX_COUNT: Final = INT64_MAX
"""Counts are int64 on the Kubernetes side (the CronTask status schema's integers)."""
MAX_MILLISECONDS: Final = 1e15
"""Timings are within [0, this]: about 31,000 years, and short in JSON."""
MAX_ENTRIES: Final = 64
"""Most entries in counts, stage_errors or stage_timings (encode keeps the most important)."""

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)] + "…"


def _text(value: object, limit: int) -> str:
    """A string that UTF-8 can encode (lone surrogates replaced), at most `limit` characters."""
    return _SURROGATE.sub("\ufffd", _clip(value if isinstance(value, str) else str(value), limit))


def _optional_text(value: object, limit: int) -> str | None:
    return None if value is None else _text(value, limit)


def _clamp_count(value: object) -> int:
    """A non-negative int64, whatever the caller put in a count."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return min(max(value, 0), INT64_MAX)
    if isinstance(value, float) and math.isfinite(value):
        return min(max(int(value), 0), INT64_MAX)
    return 0


def _clamp_milliseconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    if not math.isfinite(number) or number < 0:
        return 0.0
    return min(number, MAX_MILLISECONDS)


def _first(items: Mapping[str, Any], order: Any) -> dict[str, Any]:
    """At most MAX_ENTRIES entries, the most important first (what `decode` accepts)."""
    return dict(sorted(items.items(), key=order)[:MAX_ENTRIES])


def _sanitized(report: RunReport) -> RunReport:
    """The same report with every field inside what the schema, JSON and `decode` allow."""
    counts = {_text(k, MAX_NAME_CHARS): _clamp_count(v) for k, v in report.counts.items()}
    errors = {_text(k, MAX_NAME_CHARS): StageErrors(
        _clamp_count(e.count), _text(e.last_message, MAX_MESSAGE_CHARS))
        for k, e in report.stage_errors.items()}
    timings = {_text(k, MAX_NAME_CHARS): StageTiming(
        _clamp_count(t.count), _clamp_milliseconds(t.total_ms), _clamp_milliseconds(t.max_ms))
        for k, t in report.stage_timings.items()}
    too_many = max(len(counts), len(errors), len(timings)) > MAX_ENTRIES
    return RunReport(
        task=_text(report.task, MAX_NAME_CHARS),
        status=RunStatus(report.status),
        reason=_optional_text(report.reason, MAX_NAME_CHARS),
        error=_optional_text(report.error, MAX_MESSAGE_CHARS),
        execution_id=_optional_text(report.execution_id, MAX_NAME_CHARS),
        started_at=_optional_text(report.started_at, MAX_NAME_CHARS),
        finished_at=_optional_text(report.finished_at, MAX_NAME_CHARS),
        counts=_first(counts, lambda kv: kv[0]),
        stage_errors=_first(errors, lambda kv: (-kv[1].count, kv[0])),
        stage_timings=_first(timings, lambda kv: (-kv[1].total_ms, kv[0])),
        truncated=bool(report.truncated) or too_many,
    )


def _dumps(report: RunReport) -> str:
    return json.dumps(report.to_dict(), separators=(",", ":"), ensure_ascii=False,
                      sort_keys=True, allow_nan=False)


def _fits(text: str, max_bytes: int) -> bool:
    return len(text.encode("utf-8")) <= max_bytes


def _with(report: RunReport, **changes: Any) -> RunReport:
    values = {name: getattr(report, name) for name in report.__dataclass_fields__}
    values.update(changes)
    return RunReport(**values)


def encode(report: RunReport, max_bytes: int = MAX_REPORT_BYTES) -> str:
    """Serialise a report as compact JSON of at most `max_bytes` UTF-8 bytes, whatever it holds.

    Always valid JSON (no NaN, no lone surrogate), always within the schema (counts are
    non-negative int64, names and messages bounded), deterministic, and a fixed point:
    encoding what `decode` reads back from the output gives the same output. The order of
    sacrifice keeps what an operator needs most: the status, reason and counts survive; error
    messages are shortened first, then the stages with the fewest errors and the least time
    are dropped (the database keeps the full record).
    """
    if max_bytes < MIN_REPORT_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_REPORT_BYTES}")
    clipped = _sanitized(report)
    text = _dumps(clipped)
    if _fits(text, max_bytes):
        return text

    errors = sorted(clipped.stage_errors.items(), key=lambda kv: (-kv[1].count, kv[0]))
    timings = sorted(clipped.stage_timings.items(), key=lambda kv: (-kv[1].total_ms, kv[0]))
    candidate = _with(clipped, truncated=True)
    for message_limit in (120, 40):
        candidate = _with(
            candidate,
            error=None if candidate.error is None else _clip(candidate.error, message_limit),
            stage_errors={n: StageErrors(e.count, _clip(e.last_message, message_limit))
                          for n, e in errors},
        )
        text = _dumps(candidate)
        if _fits(text, max_bytes):
            return text
    # Drop the least important stages, timings first, halving until the report fits.
    keep_errors, keep_timings = len(errors), len(timings)
    while not _fits(text, max_bytes) and (keep_errors or keep_timings):
        if keep_timings:
            keep_timings = math.floor(keep_timings / 2)
        else:
            keep_errors = math.floor(keep_errors / 2)
        candidate = _with(
            candidate,
            stage_errors=dict(list(candidate.stage_errors.items())[:keep_errors]),
            stage_timings=dict(timings[:keep_timings]),
        )
        text = _dumps(candidate)
    if not _fits(text, max_bytes):
        # Only very many counts or long identifiers remain: keep the verdict itself, which
        # fits in MIN_REPORT_BYTES (three names of at most 64 characters, escaped).
        text = _dumps(RunReport(task=clipped.task, status=clipped.status,
                                reason=clipped.reason, truncated=True))
    return text


# Bounds on what a report may hold: a termination message is at most 4096 bytes, but the Pod
# status it is read from is written by whoever can write Pod status, so decoding trusts nothing.
MAX_DECODE_CHARS: Final = 16 * 1024
"""Longer text is refused before parsing (four times the termination message cap)."""
MAX_DEPTH: Final = 8
"""A report nests three levels deep; deeper JSON is refused before the parser recurses."""
MAX_KEY_CHARS: Final = 128
MAX_SHORT_CHARS: Final = 256
"""task, reason, execution_id and timestamps."""
MAX_TEXT_CHARS: Final = 2048
"""error and a stage's last message (encode clips them to 300)."""
_MAX_INT_DIGITS: Final = 19


def _fail(message: str) -> ReportError:
    return ReportError(message[:200])


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than MAX_DEPTH, scanning once without recursion (the parser
    itself recurses, and ``"[" * 2000`` would raise RecursionError inside it)."""
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _fail(f"run report nests deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS:
        raise _fail(f"run report number with {len(text)} digits is out of range")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _fail(f"run report number {text[:40]!r} is out of range")
    return value


def _parse_constant(text: str) -> Any:
    raise _fail(f"run report holds {text}, which is not JSON")


def _string(value: Any, where: str, limit: int) -> str:
    if not isinstance(value, str):
        raise _fail(f"run report field {where} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise _fail(f"run report field {where} is longer than {limit} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail(f"run report field {where} is not valid Unicode") from exc
    return value


def _optional_string(data: Mapping[str, Any], key: str, limit: int) -> str | None:
    value = data.get(key)
    return None if value is None else _string(value, key, limit)


def _count(value: Any, where: str) -> int:
    # bool is an int subclass and 1.0 == 1: only a real JSON integer is a count.
    if type(value) is not int:
        raise _fail(f"run report field {where} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_COUNT:
        raise _fail(f"run report field {where} must be between 0 and {MAX_COUNT}")
    return value


def _milliseconds(value: Any, where: str) -> float:
    if type(value) not in (int, float):
        raise _fail(f"run report field {where} must be a number, got {type(value).__name__}")
    number = float(value)
    if not (math.isfinite(number) and 0 <= number <= MAX_MILLISECONDS):
        raise _fail(f"run report field {where} is out of range")
    return number


def _entries(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(f"run report field {key!r} must be an object, got {type(value).__name__}")
    if len(value) > MAX_ENTRIES:
        raise _fail(f"run report field {key!r} has more than {MAX_ENTRIES} entries")
    return {_string(k, f"{key} key", MAX_KEY_CHARS): v for k, v in value.items()}


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _fail(f"run report field {where} must be an object, got {type(value).__name__}")
    return value


def from_dict(data: Any) -> RunReport:
    """A RunReport from parsed JSON; ReportError for anything that is not a version-1 report.

    Strict where the operator's status depends on it: ``v`` is the integer 1 (not ``true``, not
    ``1.0``), counts are non-negative integers within int64 (never through float), strings are
    bounded, objects are objects. Fields this version does not know are ignored.
    """
    if not isinstance(data, Mapping):
        raise _fail("a run report is a JSON object")
    version = data.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        shown = repr(version)[:40]
        raise _fail(f"unsupported run report version {shown} (expected {SCHEMA_VERSION})")
    status_text = _string(data.get("status"), "status", MAX_SHORT_CHARS)
    try:
        status = RunStatus(status_text)
    except ValueError as exc:
        raise _fail(f"unknown run status {status_text[:40]!r}") from exc
    counts = {k: _count(v, f"counts.{k}") for k, v in _entries(data, "counts").items()}
    errors: dict[str, StageErrors] = {}
    for name, raw in _entries(data, "stage_errors").items():
        entry = _object(raw, f"stage_errors.{name}")
        last = entry.get("last")
        errors[name] = StageErrors(
            _count(entry.get("count"), f"stage_errors.{name}.count"),
            "" if last is None else _string(last, f"stage_errors.{name}.last", MAX_TEXT_CHARS))
    timings: dict[str, StageTiming] = {}
    for name, raw in _entries(data, "stage_timings").items():
        entry = _object(raw, f"stage_timings.{name}")
        timings[name] = StageTiming(
            count=_count(entry.get("n"), f"stage_timings.{name}.n"),
            total_ms=_milliseconds(entry.get("total_ms"), f"stage_timings.{name}.total_ms"),
            max_ms=_milliseconds(entry.get("max_ms"), f"stage_timings.{name}.max_ms"),
        )
    truncated = data.get("truncated", False)
    if truncated is None:
        truncated = False
    if not isinstance(truncated, bool):
        raise _fail("run report field 'truncated' must be a boolean")
    return RunReport(
        task=_string(data.get("task"), "task", MAX_SHORT_CHARS),
        status=status,
        reason=_optional_string(data, "reason", MAX_SHORT_CHARS),
        error=_optional_string(data, "error", MAX_TEXT_CHARS),
        execution_id=_optional_string(data, "execution_id", MAX_SHORT_CHARS),
        started_at=_optional_string(data, "started_at", MAX_SHORT_CHARS),
        finished_at=_optional_string(data, "finished_at", MAX_SHORT_CHARS),
        counts=counts,
        stage_errors=errors,
        stage_timings=timings,
        truncated=truncated,
    )


def decode(text: Any) -> RunReport:
    """Parse a termination message. Raises ReportError, and only ReportError, for anything that
    is not a run report: not text, too long, too deep, not JSON, NaN or Infinity, a number beyond
    int64, a wrong type anywhere."""
    if not isinstance(text, str):
        raise _fail(f"a termination message is text, got {type(text).__name__}")
    if len(text) > MAX_DECODE_CHARS:
        raise _fail(f"termination message is longer than {MAX_DECODE_CHARS} characters")
    _check_depth(text)
    try:
        data = json.loads(text, parse_int=_parse_int, parse_float=_parse_float,
                          parse_constant=_parse_constant)
    except ReportError:
        raise
    except json.JSONDecodeError as exc:
        raise _fail(f"termination message is not JSON: {exc.msg}") from exc
    except (ValueError, RecursionError, TypeError, OverflowError) as exc:
        raise _fail(f"termination message is not a run report: {type(exc).__name__}") from exc
    return from_dict(data)


__all__ = [
    "GONE_TASKS",
    "MAX_MESSAGE_CHARS",
    "MAX_REPORT_BYTES",
    "SCHEMA_VERSION",
    "TASKS",
    "ReportError",
    "RunReport",
    "RunStatus",
    "SkipReason",
    "StageErrors",
    "StageTiming",
    "decode",
    "encode",
    "from_dict",
    "gone_message",
]
