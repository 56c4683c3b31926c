"""Structured logs: one JSON object per line, with the CronTask a line is about.

Kopf attaches the object reference (``k8s_ref``) and its settings to its per-object log records;
the reference becomes an ``object`` field (so a log pipeline can filter by CronTask), the rest is
left out: the settings object is neither serialisable nor useful in a log line.

Anything shaped like a credential is masked in every record (``RedactSecrets``): on our handler
for what is written to stderr, and on Kopf's ``kopf.objects`` logger, whose records Kopf also
posts as Events on the CronTask (API errors it retries, for instance, quote the server).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from crontask_contract.redact import redact

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


class RedactSecrets(logging.Filter):
    """Mask credential-shaped text in a record's message and traceback, in place, so that
    every handler after this filter (stderr, Kopf's event poster) sees the masked text."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None
        return True


def configure(log_format: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets())
    objects = logging.getLogger("kopf.objects")
    if not any(isinstance(f, RedactSecrets) for f in objects.filters):
        objects.addFilter(RedactSecrets())
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
