"""The few Kubernetes API calls the operator makes itself (Kopf does the watching).

Reads never happen here: everything the operator decides with comes from its watch caches.
Writes are few and each says why it exists:

- the CronJob by server-side apply with our own field manager: applying the same manifest twice
  is a no-op on the server, a hand edit of a field we own is taken back (``force``), fields
  other managers add are left alone;
- before creating a CronJob, a dry-run create: a CronJob of that name that the caches do not
  show (it lacks our label: someone else's) answers 409, and is reported, never taken over;
- a refused CronTask's CronJob is suspended by a merge patch of ``spec.suspend`` alone;
- a retired task's CronJob is deleted, with a precondition on its UID;
- status by a merge patch carrying the resourceVersion it was computed from, so that a status
  built on a stale cache is refused (409) instead of counting a run twice;
- Events on the CronTask.

Every request is counted in ``crontask_operator_api_writes_total``, and none is sent unless the
fence allows it (with leader election: only while this replica holds the Lease, see ``leader``).
``Leases`` makes the Lease requests of leader election itself.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from crontask_operator import names
from crontask_operator.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rejected(Exception):
    """The API server refused an object as invalid (422) or forbidden by policy (403)."""

    status: int
    message: str

    def __str__(self) -> str:
        return self.message


class AlreadyExists(Exception):
    """A CronJob of that name exists (one the caches do not show: not ours)."""


class Stale(Exception):
    """The object changed since it was read (409 on a resourceVersion precondition)."""


class NamespaceTerminating(Exception):
    """Nothing can be created in a namespace that is being deleted: the CronTask goes too."""


TRANSIENT_FORBIDDEN = ("cannot find RESTMapping",)
"""403 messages that say the API server does not know a kind yet, not that the object is
refused: right after a kube-apiserver restart, OwnerReferencesPermissionEnforcement checks an
owner reference before discovery has found the CRD ("cannot set blockOwnerDeletion ... cannot
find RESTMapping for ... CronTask"). Such a failure is retried like any other error; taken as a
refusal, the CronJob would wait for the next resync."""


def _refusal(exc: ApiException) -> Exception:
    """The exception a failed create or apply stands for."""
    if exc.status == 403 and "NamespaceTerminating" in str(exc.body or ""):
        return NamespaceTerminating(server_message(exc))
    if exc.status == 403 and any(m in server_message(exc) for m in TRANSIENT_FORBIDDEN):
        return exc
    if exc.status in (403, 422):
        return Rejected(exc.status, server_message(exc))
    return exc


def server_message(exc: ApiException) -> str:
    """The human part of an API error (the Status object's message), not the whole dump."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        return str(exc.reason or exc)[:1024]
    message = body.get("message") if isinstance(body, Mapping) else None
    return str(message or exc.reason or exc)[:1024]


async def load_config() -> None:
    """In a pod: the service account; elsewhere: $KUBECONFIG or ~/.kube/config."""
    try:
        config.load_incluster_config()  # type: ignore[no-untyped-call]
    except config.ConfigException:
        await config.load_kube_config()


def _plain(api_client: client.ApiClient, obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = api_client.sanitize_for_serialization(obj)
    return data


class Kube:
    """The operator's writes; one shared API client per process."""

    def __init__(self, api_client: client.ApiClient, metrics: Metrics,
                 fence: Callable[[], None] | None = None) -> None:
        self._client = api_client
        self.fence = fence
        """Raises (``leader.NotLeading``) when this replica may not write; None: always may."""
        self._batch = client.BatchV1Api(api_client)
        self._core = client.CoreV1Api(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._metrics = metrics
        self._instance = os.environ.get("POD_ID") or names.MANAGED_BY

    async def close(self) -> None:
        await self._client.close()

    def _count(self, resource: str, verb: str) -> None:
        """Every write passes here first: the fence, then the count."""
        if self.fence is not None:
            self.fence()
        self._metrics.api_writes.labels(resource, verb).inc()

    async def check_create(self, manifest: Mapping[str, Any]) -> None:
        """A dry-run create: AlreadyExists if the name is taken, Rejected if invalid."""
        meta = manifest["metadata"]
        self._count("cronjobs", "create")
        try:
            await self._batch.create_namespaced_cron_job(
                meta["namespace"], dict(manifest), dry_run="All",  # type: ignore[arg-type]
                field_manager=names.FIELD_MANAGER)
        except ApiException as exc:
            if exc.status == 409:
                raise AlreadyExists(meta["name"]) from exc
            raise _refusal(exc) from exc

    async def apply_cronjob(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create or patch by server-side apply; Rejected for a 422/403 (never retried)."""
        meta = manifest["metadata"]
        self._count("cronjobs", "patch")
        try:
            obj = await self._batch.patch_namespaced_cron_job(  # type: ignore[call-arg]
                meta["name"], meta["namespace"], dict(manifest),
                field_manager=names.FIELD_MANAGER, force=True,
                _content_type="application/apply-patch+yaml")
        except ApiException as exc:
            raise _refusal(exc) from exc
        return _plain(self._client, obj)

    async def suspend_cronjob(self, namespace: str, name: str, uid: str) -> dict[str, Any]:
        """Suspend the very CronJob we own (the UID is a precondition)."""
        self._count("cronjobs", "patch")
        obj = await self._batch.patch_namespaced_cron_job(  # type: ignore[call-arg]
            name, namespace, {"metadata": {"uid": uid}, "spec": {"suspend": True}},
            field_manager=names.FIELD_MANAGER, _content_type="application/merge-patch+json")
        return _plain(self._client, obj)

    async def delete_cronjob(self, namespace: str, name: str, uid: str) -> bool:
        """Delete only the very object we own (a precondition on its uid)."""
        self._count("cronjobs", "delete")
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

    async def patch_status(self, namespace: str, name: str, resource_version: str | None,
                           patch: Mapping[str, Any]) -> dict[str, Any]:
        """Merge-patch the status, only if the object is still at ``resource_version``."""
        body: dict[str, Any] = {"status": dict(patch)}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        self._count("crontasks/status", "patch")
        try:
            obj = await self._custom.patch_namespaced_custom_object_status(  # type: ignore[call-arg]
                names.GROUP, names.VERSION, namespace, names.PLURAL, name, body,
                field_manager=names.FIELD_MANAGER,
                _content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 409:
                raise Stale(name) from exc
            if exc.status == 422:
                raise Rejected(exc.status, server_message(exc)) from exc
            raise
        out: dict[str, Any] = obj if isinstance(obj, dict) else _plain(self._client, obj)
        return out

    async def post_event(self, involved: Mapping[str, str], type_: str, reason: str,
                         message: str) -> None:
        """One Event on the CronTask. Failures are logged, never raised: an Event is a
        courtesy, the status is the record."""
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace":
                         involved["namespace"]},
            "involvedObject": {"apiVersion": f"{names.GROUP}/{names.VERSION}",
                               "kind": names.KIND, **involved},
            "type": type_, "reason": reason[:128], "message": message[:1024],
            "source": {"component": names.MANAGED_BY},
            "reportingComponent": names.MANAGED_BY, "reportingInstance": self._instance[:128],
            "firstTimestamp": stamp, "lastTimestamp": stamp, "eventTime": now, "count": 1,
            "action": "Reconcile",
        }
        self._count("events", "create")
        try:
            await self._core.create_namespaced_event(
                involved["namespace"], body)  # type: ignore[arg-type]
        except (ApiException, OSError, TimeoutError) as exc:
            log.warning("could not post event %s on %s/%s: %s", reason, involved["namespace"],
                        involved["name"], getattr(exc, "status", exc))


    async def find(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """Our CronJob or a CronTask if it exists now (``kind``: cronjobs or crontasks): a
        list narrowed to the name, as the operator may list but not get; a read, no fence."""
        selector = f"metadata.name={name}"
        if kind == "cronjobs":
            found = _plain(self._client, await self._batch.list_namespaced_cron_job(
                namespace, label_selector=names.LABEL_CRONTASK, field_selector=selector))
        else:
            found = await self._custom.list_namespaced_custom_object(
                names.GROUP, names.VERSION, namespace, names.PLURAL, field_selector=selector)
        items = found.get("items") or []
        return dict(items[0]) if items else None


class Leases:
    """The Lease requests of leader election (``leader.LeaseApi``): a missing Lease is None on
    ``get``, a conflict (another writer came first) is None on ``create`` and ``replace``."""

    def __init__(self, api_client: client.ApiClient, timeout: float) -> None:
        self._client = api_client
        self._api = client.CoordinationV1Api(api_client)
        self._timeout = timeout

    async def _lease(self, call: Awaitable[Any], none_on: int) -> dict[str, Any] | None:
        """The Lease a request returned, or None when the server answered `none_on` (404: no
        Lease; 409: somebody else wrote it first)."""
        try:
            obj = await call
        except ApiException as exc:
            if exc.status == none_on:
                return None
            raise
        return _plain(self._client, obj)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._lease(self._api.read_namespaced_lease(
            name, namespace, _request_timeout=self._timeout), 404)

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self._lease(self._api.create_namespaced_lease(
            body["metadata"]["namespace"], dict(body),  # type: ignore[arg-type]
            _request_timeout=self._timeout), 409)

    async def replace(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = body["metadata"]
        return await self._lease(self._api.replace_namespaced_lease(
            meta["name"], meta["namespace"], dict(body),  # type: ignore[arg-type]
            _request_timeout=self._timeout), 409)
