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
MAX_MILLISECONDS: Final = 1e15
"""Timings are clamped to [0, this]: about 31,000 years, and short in JSON."""

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


def _count(value: object) -> int:
    """A non-negative int64, whatever the caller put in a count."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return min(max(value, 0), INT64_MAX)
    if isinstance(value, float) and math.isfinite(value):
        return min(max(int(value), 0), INT64_MAX)
    return 0


def _milliseconds(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    number = float(value)
    if not math.isfinite(number) or number < 0:
        return 0.0
    return min(number, MAX_MILLISECONDS)


def _sanitized(report: RunReport) -> RunReport:
    """The same report with every field inside what the schema and JSON allow."""
    return RunReport(
        task=_text(report.task, MAX_NAME_CHARS),
        status=RunStatus(report.status),
        reason=_optional_text(report.reason, MAX_NAME_CHARS),
        error=_optional_text(report.error, MAX_MESSAGE_CHARS),
        execution_id=_optional_text(report.execution_id, MAX_NAME_CHARS),
        started_at=_optional_text(report.started_at, MAX_NAME_CHARS),
        finished_at=_optional_text(report.finished_at, MAX_NAME_CHARS),
        counts={_text(k, MAX_NAME_CHARS): _count(v) for k, v in report.counts.items()},
        stage_errors={_text(k, MAX_NAME_CHARS): StageErrors(
            _count(e.count), _text(e.last_message, MAX_MESSAGE_CHARS))
            for k, e in report.stage_errors.items()},
        stage_timings={_text(k, MAX_NAME_CHARS): StageTiming(
            _count(t.count), _milliseconds(t.total_ms), _milliseconds(t.max_ms))
            for k, t in report.stage_timings.items()},
        truncated=bool(report.truncated),
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


def _require(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key)
    if not isinstance(value, kind):
        raise ReportError(f"run report field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _optional_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None or isinstance(value, str):
        return value
    raise ReportError(f"run report field {key!r} must be a string, got {value!r}")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReportError(f"run report field {where} must be a number, got {value!r}")
    return float(value)


def from_dict(data: Any) -> RunReport:
    if not isinstance(data, Mapping):
        raise ReportError("a run report is a JSON object")
    version = data.get("v")
    if version != SCHEMA_VERSION:
        raise ReportError(f"unsupported run report version {version!r} (expected {SCHEMA_VERSION})")
    try:
        status = RunStatus(_require(data, "status", str))
    except ValueError as exc:
        raise ReportError(f"unknown run status {data.get('status')!r}") from exc
    counts_raw = data.get("counts", {})
    if not isinstance(counts_raw, Mapping):
        raise ReportError("run report field 'counts' must be an object")
    counts = {str(k): int(_number(v, f"counts.{k}")) for k, v in counts_raw.items()}
    errors: dict[str, StageErrors] = {}
    for name, raw in dict(data.get("stage_errors") or {}).items():
        if not isinstance(raw, Mapping):
            raise ReportError(f"stage_errors.{name} must be an object")
        count = int(_number(raw.get("count"), f"stage_errors.{name}.count"))
        errors[str(name)] = StageErrors(count, str(raw.get("last", "")))
    timings: dict[str, StageTiming] = {}
    for name, raw in dict(data.get("stage_timings") or {}).items():
        if not isinstance(raw, Mapping):
            raise ReportError(f"stage_timings.{name} must be an object")
        timings[str(name)] = StageTiming(
            count=int(_number(raw.get("n"), f"stage_timings.{name}.n")),
            total_ms=_number(raw.get("total_ms"), f"stage_timings.{name}.total_ms"),
            max_ms=_number(raw.get("max_ms"), f"stage_timings.{name}.max_ms"),
        )
    return RunReport(
        task=_require(data, "task", str),
        status=status,
        reason=_optional_str(data, "reason"),
        error=_optional_str(data, "error"),
        execution_id=_optional_str(data, "execution_id"),
        started_at=_optional_str(data, "started_at"),
        finished_at=_optional_str(data, "finished_at"),
        counts=counts,
        stage_errors=errors,
        stage_timings=timings,
        truncated=bool(data.get("truncated", False)),
    )


def decode(text: str) -> RunReport:
    """Parse a termination message. Raises ReportError for anything that is not a report."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"termination message is not JSON: {exc.msg}") from exc
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
