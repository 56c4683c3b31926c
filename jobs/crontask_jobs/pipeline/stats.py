"""Folding per-conversation stage results into a run's stage_errors and stage_timings (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crontask_contract.report import StageErrors, StageTiming


@dataclass(frozen=True)
class StageResult:
    stage: str
    elapsed_ms: float
    error: str | None = None
    timed_out: bool = False


def fold_timings(results: Iterable[StageResult]) -> dict[str, StageTiming]:
    out: dict[str, StageTiming] = {}
    for r in results:
        prev = out.get(r.stage, StageTiming(0, 0.0, 0.0))
        out[r.stage] = StageTiming(prev.count + 1, prev.total_ms + r.elapsed_ms,
                                   max(prev.max_ms, r.elapsed_ms))
    return out


def fold_errors(results: Iterable[StageResult]) -> dict[str, StageErrors]:
    out: dict[str, StageErrors] = {}
    for r in results:
        if r.error is None:
            continue
        prev = out.get(r.stage, StageErrors(0, ""))
        out[r.stage] = StageErrors(prev.count + 1, r.error)
    return out


def timings_json(timings: dict[str, StageTiming]) -> dict[str, dict[str, float]]:
    return {name: {"count": t.count, "total_ms": round(t.total_ms, 3),
                   "max_ms": round(t.max_ms, 3), "mean_ms": round(t.mean_ms, 3)}
            for name, t in timings.items()}


def errors_json(errors: dict[str, StageErrors]) -> dict[str, dict[str, object]]:
    return {name: {"count": e.count, "last_message": e.last_message}
            for name, e in errors.items()}
