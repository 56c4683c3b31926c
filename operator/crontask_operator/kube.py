"""The few Kubernetes API calls the operator makes itself (Kopf does the watching).

Writes go through server-side apply with our own field manager: applying the same manifest
twice is a no-op on the server, a hand edit of a field we own is taken back (``force``), and
fields other controllers add are left alone. This module is the only one that talks to the API
server; everything it decides with is computed elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from crontask_operator import names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected(Exception):
    """The API server refused an object as invalid (422) or forbidden by policy (403)."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


def server_message(exc: ApiException) -> str:
    """The human part of an API error (the Status object's message), not the whole dump."""
    import json

    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason or exc)
    return str(body.get("message") or exc.reason or exc)


async def load_config() -> None:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()


class Kube:
    """CronJob reads and writes for the handlers; one shared API client per process."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client
        self._batch = client.BatchV1Api(api_client)

    async def close(self) -> None:
        await self._client.close()

    async def get_cronjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj = await self._batch.read_namespaced_cron_job(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return self._plain(obj)

    def _plain(self, obj: Any) -> dict[str, Any]:
        """The object as the API server's JSON (camelCase keys), like a Kopf body."""
        data: dict[str, Any] = self._client.sanitize_for_serialization(obj)
        return data

    async def apply_cronjob(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create or patch by server-side apply; Rejected for a 422/403 (never retried)."""
        meta = manifest["metadata"]
        try:
            obj = await self._batch.patch_namespaced_cron_job(  # type: ignore[call-arg]
                meta["name"], meta["namespace"], dict(manifest),
                field_manager=names.FIELD_MANAGER, force=True,
                _content_type="application/apply-patch+yaml")
        except ApiException as exc:
            if exc.status in (403, 422):
                raise Rejected(exc.status, server_message(exc)) from exc
            raise
        return self._plain(obj)

    async def suspend_cronjob(self, namespace: str, name: str, uid: str) -> bool:
        """Set ``spec.suspend`` of the very object we own (a JSON patch that tests its uid).

        Not server-side apply: an apply of this one field would drop every other field the
        operator owns. The next apply from a valid spec takes the field back.
        """
        ops = [{"op": "test", "path": "/metadata/uid", "value": uid},
               {"op": "replace", "path": "/spec/suspend", "value": True}]
        try:
            await self._batch.patch_namespaced_cron_job(  # type: ignore[call-arg]
                name, namespace, ops, _content_type="application/json-patch+json")
        except ApiException as exc:
            if exc.status in (404, 409, 422):
                return False
            raise
        return True

    async def delete_cronjob(self, namespace: str, name: str, uid: str) -> bool:
        """Delete only the very object we own (a precondition on its uid)."""
        try:
            await self._batch.delete_namespaced_cron_job(
                name, namespace, body=client.V1DeleteOptions(
                    preconditions=client.V1Preconditions(uid=uid),
                    propagation_policy="Background"))
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True
