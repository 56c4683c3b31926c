"""Emitting the run report: the last line of stdout, and the termination-message file.

The file is what the operator reads back from the Pod status; Kubernetes keeps at most 4096
bytes of it, which `crontask_contract.report.encode` guarantees. A missing default file (running
outside Kubernetes) is not an error; an explicitly requested one that cannot be written is
logged, and never turns a completed run into a failed one.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Final

from crontask_contract.report import RunReport, encode

log = logging.getLogger(__name__)

DEFAULT_REPORT_FILE: Final = "/dev/termination-log"


def default_report_file() -> str | None:
    return DEFAULT_REPORT_FILE if os.access(DEFAULT_REPORT_FILE, os.W_OK) else None


def emit(report: RunReport, report_file: str | None) -> str:
    text = encode(report)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if report_file:
        try:
            with open(report_file, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            log.error("could not write the run report to %s: %s", report_file, exc.strerror)
    return text
