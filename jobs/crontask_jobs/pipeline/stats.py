"""Folding per-conversation stage results into a run's stage_errors and stage_timings (pure).

The folded values are the run report's own types, so the report and `job_executions.result`
carry them in one shape (`{"count", "last"}` and `{"n", "total_ms", "max_ms"}`), written by
`RunReport.to_dict`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crontask_contract.report import StageErrors, StageTiming


@dataclass(frozen=True)
class StageResult:
    stage: str
    elapsed_ms: float
    error: str | None = None
    """Already safe: masked, one line, bounded (messages.safe_text)."""


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
