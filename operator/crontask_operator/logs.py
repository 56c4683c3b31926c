"""Structured logs: one JSON object per line, with the CronTask a line is about.

Kopf attaches the object reference (``k8s_ref``) and its settings to its per-object log records;
the reference becomes an ``object`` field (so a log pipeline can filter by CronTask), the rest is
left out: the settings object is neither serialisable nor useful in a log line.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

KOPF_ATTRS = frozenset({"k8s_skip", "k8s_ref", "settings"})


class OperatorJsonFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, *KOPF_ATTRS],
            json_default=str,
        )

    def add_fields(self, log_record: dict[str, Any], record: logging.LogRecord,
                   message_dict: dict[str, Any]) -> None:
        super().add_fields(log_record, record, message_dict)
        ref = getattr(record, "k8s_ref", None)
        if isinstance(ref, dict) and ref.get("name"):
            log_record["object"] = {k: ref[k] for k in ("kind", "namespace", "name")
                                    if ref.get(k)}


def configure(log_format: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(OperatorJsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-8s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    # The API client logs whole response bodies at DEBUG: far too much even for debugging.
    logging.getLogger("kubernetes_asyncio").setLevel(max(logging.INFO, root.level))
