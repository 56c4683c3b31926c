"""Watches of our own, in a background thread, for tests and benchmarks that must know *when*
something happened on the cluster (a CronJob appeared, a Job finished, a run reached a status)
or *whether* it ever happened (a Job that finished and was deleted a moment later).

Each watch lists, then watches from the list's resourceVersion, and starts over (a new list)
after any error: an API server or etcd restart loses nothing, at the price of events seen twice,
so callbacks must be idempotent. Objects arrive as plain dicts (the generic custom-object
calls, also for built-in kinds: no model deserialization, which matters with thousands of
objects on 2 cores). Times are this process's monotonic clock at receipt.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Callback = Callable[[str, dict[str, Any], float], None]
"""(event type: LISTED, ADDED, MODIFIED or DELETED; the object; when it arrived)."""

KINDS = {"cronjobs": ("batch", "v1"), "jobs": ("batch", "v1"),
         "crontasks": ("crontask.dev", "v1alpha1"), "leases": ("coordination.k8s.io", "v1")}
"""What can be watched: kinds of named API groups (the generic calls need /apis/GROUP)."""


@dataclass
class _Watch:
    plural: str
    namespace: str
    callback: Callback
    label_selector: str | None = None


class Watches:
    def __init__(self) -> None:
        self._watches: list[_Watch] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[asyncio.Task[None]] = []
        self.restarts = 0
        """How often a watch had to start over (errors, server restarts)."""
        self.errors: list[str] = []
        self._synced: dict[int, threading.Event] = {}

    def add(self, plural: str, namespace: str, callback: Callback,
            label_selector: str | None = None) -> None:
        self._watches.append(_Watch(plural, namespace, callback, label_selector))

    def start(self, timeout: float = 60) -> None:
        """Start every watch; returns once each has delivered its first list."""
        self.thread.start()

        async def spawn() -> None:
            for number, spec in enumerate(self._watches):
                self._synced[number] = threading.Event()
                self.tasks.append(asyncio.create_task(self._run(number, spec)))
        asyncio.run_coroutine_threadsafe(spawn(), self.loop).result(timeout=10)
        deadline = time.monotonic() + timeout
        for event in self._synced.values():
            if not event.wait(max(0.0, deadline - time.monotonic())):
                raise AssertionError(f"watches not listed within {timeout}s: {self.errors}")

    def stop(self) -> None:
        async def cancel() -> None:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
            await asyncio.sleep(0.3)  # let the closed connections' transports finish closing
            await self.loop.shutdown_asyncgens()
        asyncio.run_coroutine_threadsafe(cancel(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()
        gc.collect()  # a cancelled watch can leave its socket to the garbage collector

    async def _run(self, number: int, spec: _Watch) -> None:
        from kubernetes_asyncio import client, config, watch

        await config.load_kube_config()
        group, version = KINDS[spec.plural]
        async with client.ApiClient() as api:
            custom = client.CustomObjectsApi(api)
            while True:
                try:
                    await self._list_and_watch(custom, watch, number, spec, group, version)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a restarting server: start over
                    self.restarts += 1
                    if len(self.errors) < 100:
                        self.errors.append(f"{spec.plural}: {type(exc).__name__}: {exc}"[:300])
                    await asyncio.sleep(0.5)

    async def _list_and_watch(self, custom: Any, watch: Any, number: int, spec: _Watch,
                              group: str, version: str) -> None:
        kwargs: dict[str, Any] = {"group": group, "version": version,
                                  "namespace": spec.namespace, "plural": spec.plural}
        if spec.label_selector:
            kwargs["label_selector"] = spec.label_selector
        listing = await custom.list_namespaced_custom_object(**kwargs, _request_timeout=60)
        now = time.monotonic()
        for item in listing.get("items") or []:
            spec.callback("LISTED", item, now)
        self._synced[number].set()
        resource_version = (listing.get("metadata") or {}).get("resourceVersion")
        async with watch.Watch() as stream:
            async for event in stream.stream(custom.list_namespaced_custom_object, **kwargs,
                                             resource_version=resource_version,
                                             timeout_seconds=300, _request_timeout=330):
                if event.get("type") == "ERROR":
                    raise RuntimeError(str(event.get("raw_object"))[:200])
                spec.callback(str(event["type"]), event["raw_object"], time.monotonic())


def finished(job: dict[str, Any]) -> str | None:
    """Complete or Failed once a Job has finished (its condition True), else None."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and cond.get("status") == "True":
            return str(cond["type"])
    return None


def ready(crontask: dict[str, Any]) -> bool:
    for cond in (crontask.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def owned_by(obj: dict[str, Any]) -> str | None:
    """The UID of the object's controller, if any."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


@contextlib.contextmanager
def running(watches: Watches, timeout: float = 60) -> Any:
    watches.start(timeout)
    try:
        yield watches
    finally:
        watches.stop()
