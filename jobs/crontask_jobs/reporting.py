"""Emitting the run report: the last line of stdout, and the termination-message file.

The file is what the operator reads back from the Pod status; Kubernetes keeps at most 4096
bytes of it, which `crontask_contract.report.encode` guarantees. Every free-text field is
masked with the run's masker on the way out, whatever produced it. A missing default file (running
outside Kubernetes) is not an error; an explicitly requested one that cannot be written is
logged, and never turns a completed run into a failed one.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final

from crontask_contract.report import RunReport, StageErrors, encode
from crontask_jobs import masking

log = logging.getLogger(__name__)

DEFAULT_REPORT_FILE: Final = "/dev/termination-log"


def default_report_file() -> str | None:
    return DEFAULT_REPORT_FILE if os.access(DEFAULT_REPORT_FILE, os.W_OK) else None


def masked(report: RunReport) -> RunReport:
    """The report with the run's credentials masked in every free-text field."""
    mask = masking.active().mask
    return RunReport(
        task=report.task, status=report.status,
        reason=None if report.reason is None else mask(report.reason),
        error=None if report.error is None else mask(report.error),
        execution_id=report.execution_id, started_at=report.started_at,
        finished_at=report.finished_at, counts=report.counts,
        stage_errors={name: StageErrors(e.count, mask(e.last_message))
                      for name, e in report.stage_errors.items()},
        stage_timings=report.stage_timings, truncated=report.truncated)


def emit(report: RunReport, report_file: str | None) -> str:
    text = encode(masked(report))
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if report_file:
        try:
            with open(report_file, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            log.error("could not write the run report to %s: %s", report_file, exc.strerror)
    return text
