"""The report a job emits fits a termination message whatever the number of errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from crontask_contract.report import (
    MAX_REPORT_BYTES,
    RunReport,
    RunStatus,
    StageErrors,
    StageTiming,
    decode,
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
