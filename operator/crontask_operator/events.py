"""Kubernetes Events about a CronTask, behind a small interface the unit tests can record.

Every message is masked (``crontask_contract.redact``) before it is shortened to the 1024
characters an Event keeps: cutting first could leave half a password no shape recognises.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

import kopf

from crontask_contract.redact import redact


class Events(Protocol):
    def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...
    def normal(self, body: Mapping[str, Any], reason: str, message: str) -> None: ...


class KopfEvents:
    """Posted through Kopf's event queue (asynchronously, with retries and backoff)."""

    def warn(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        kopf.event(_body(body), type="Warning", reason=reason,
                   message=redact(message)[:1024])

    def normal(self, body: Mapping[str, Any], reason: str, message: str) -> None:
        kopf.event(_body(body), type="Normal", reason=reason,
                   message=redact(message)[:1024])


def _body(body: Mapping[str, Any]) -> kopf.Body:
    if isinstance(body, kopf.Body):
        return body
    return kopf.Body(cast(kopf.RawBody, dict(body)))
