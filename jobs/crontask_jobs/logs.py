"""Logging to stderr (stdout's last line belongs to the run report), as JSON or text.

Every record is masked as it is formatted, message and traceback alike, with the run's masker
(`masking.active()`): driver errors and tracebacks may echo a connection string. A message is
kept on one line and bounded; a traceback keeps its lines (JSON escapes them; in text format
they are the traceback's own continuation lines).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Final

from crontask_jobs import masking
from crontask_jobs.messages import clip, one_line

MAX_LOG_MESSAGE_CHARS: Final = 2000
MAX_TRACEBACK_CHARS: Final = 20_000


def _message(record: logging.LogRecord) -> str:
    try:
        text = record.getMessage()
    except Exception:  # a bad format string must not lose the record
        text = f"{record.msg!r} (unformattable arguments)"
    return clip(one_line(masking.active().mask(text)), MAX_LOG_MESSAGE_CHARS)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _message(record),
        }
        if record.exc_info:
            out["exc"] = clip(masking.active().mask(self.formatException(record.exc_info)),
                              MAX_TRACEBACK_CHARS)
        return json.dumps(out, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = _message(record)
        return super().formatMessage(record)

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return clip(masking.active().mask(super().formatException(ei)), MAX_TRACEBACK_CHARS)


def configure(level: int, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # warnings too are masked and go to stderr as records
