"""Shared builders for the operator's unit tests (plain functions and a small fake world).

``World`` stands in for the API server *and* the watch caches, so that the controller's own
logic (events to keys, overlays after writes, folding, suspension) can be exercised without a
cluster: writes land in ``World.objects`` at once, and reach the caches only when a test calls
``deliver()``, as a watch event would. The cluster tier runs the same code against a real API
server.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

from crontask_operator import names
from crontask_operator.controller import Caches, Controller, Key
from crontask_operator.cronjob import JobDefaults
from crontask_operator.handlers import recover_threshold, slim_cronjob, slim_crontask
from crontask_operator.kube import AlreadyExists, Rejected, Stale
from crontask_operator.metrics import Metrics
from crontask_operator.outcomes import job_result, pod_result
from crontask_operator.patches import apply_merge_patch

NOW = dt.datetime(2026, 1, 5, 12, 0, 7, tzinfo=dt.UTC)


def crontask_spec(task: str = "process", **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": task,
        "schedule": "*/5 * * * *",
        "database": {"secretKeyRef": {"name": "crontask-db"}},
    }
    spec.update(extra)
    return spec


def crontask(name: str = "process", task: str = "process", **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "crontask.dev/v1alpha1",
        "kind": "CronTask",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": crontask_spec(task, **extra),
    }


class World:
    """The API server's objects, the caches the watches fill, and a recording writer."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 100
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.reject: str | None = None
        self.stale_once = False
        self.during_write: list[Any] = []
        """Callables run while a status write is in flight (events arriving meanwhile)."""
        self.caches = Caches(crontasks={}, cronjobs={}, jobs={}, pods={}, recover_thresholds={},
                             tasks={})
        self.now = NOW
        self.controller = Controller(self, JobDefaults(), Metrics(), resync_seconds=300,
                                     clock=lambda: self.now)
        self.controller.bind(self.caches)
        self._delivered: dict[tuple[str, str, str], Any] = {}

    # -- objects --------------------------------------------------------------------------
    def _bump(self, obj: dict[str, Any]) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)

    def add_crontask(self, name: str = "process", task: str = "process",
                     **extra: Any) -> Key:
        body = crontask(name, task, **extra)
        body["metadata"].update(uid=f"uid-{name}", generation=1)
        body["status"] = {}
        self._bump(body)
        self.objects[("CronTask", "ns", name)] = body
        self.deliver()
        return ("ns", name)

    def crontask(self, name: str = "process") -> dict[str, Any]:
        return self.objects[("CronTask", "ns", name)]

    def status(self, name: str = "process") -> dict[str, Any]:
        return dict(self.crontask(name).get("status") or {})

    def set_spec(self, name: str, **changes: Any) -> None:
        body = self.crontask(name)
        body["spec"].update(changes)
        body["metadata"]["generation"] += 1
        self._bump(body)

    def cronjob(self, name: str = "process") -> dict[str, Any] | None:
        return self.objects.get(("CronJob", "ns", name))

    def edit_cronjob(self, name: str, change: Any) -> None:
        obj = self.objects[("CronJob", "ns", name)]
        change(obj)
        self._bump(obj)

    def add_job(self, name: str, crontask_name: str = "process", *, failed: bool = False,
                finished: bool = True, message: str | None = None, exit_code: int = 0,
                completion: str = "2026-01-05T12:00:05Z", owner: str | None = None) -> str:
        uid = f"job-{name}"
        status: dict[str, Any] = {"startTime": "2026-01-05T12:00:00Z"}
        if finished:
            status["conditions"] = [{"type": "Failed" if failed else "Complete",
                                     "status": "True", "lastTransitionTime": completion}]
            if not failed:
                status["completionTime"] = completion
        self.objects[("Job", "ns", name)] = {
            "metadata": {"name": name, "namespace": "ns", "uid": uid,
                         "labels": {names.LABEL_CRONTASK: crontask_name},
                         "ownerReferences": [{"kind": "CronJob", "name": owner or crontask_name,
                                              "uid": "cj", "controller": True}]},
            "status": status}
        if finished or message:
            terminated: dict[str, Any] = {"exitCode": exit_code, "reason": "Completed"
                                          if exit_code == 0 else "Error",
                                          "finishedAt": completion}
            if message is not None:
                terminated["message"] = message
            self.objects[("Pod", "ns", f"{name}-pod")] = {
                "metadata": {"name": f"{name}-pod", "namespace": "ns", "uid": f"pod-{name}",
                             "creationTimestamp": "2026-01-05T12:00:00Z",
                             "labels": {names.LABEL_CRONTASK: crontask_name,
                                        names.JOB_NAME_LABEL: name},
                             "ownerReferences": [{"kind": "Job", "name": name, "uid": uid,
                                                  "controller": True}]},
                "status": {"containerStatuses": [{"name": "crontask-job", "state": {
                    "terminated": terminated}}]}}
        return uid

    def delete(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.objects.pop((kind, "ns", name), None)

    # -- the watch: caches and events -----------------------------------------------------
    def deliver(self) -> None:
        """Bring every cache up to date and tell the controller, as the watches do."""
        seen = {k: v["metadata"].get("resourceVersion") for k, v in self.objects.items()
                if k[0] in ("CronTask", "CronJob")}
        for kind, ns, name in self._delivered:
            if (kind, ns, name) not in seen:
                gone = {"metadata": {"name": name, "namespace": ns}}
                if kind == "CronTask":
                    self.controller.crontask_event((ns, name), "DELETED", gone)
                else:
                    self.controller.cronjob_event((ns, name), gone, "DELETED")
        for (kind, ns, name), version in seen.items():
            if self._delivered.get((kind, ns, name)) != version:
                body = self.objects[(kind, ns, name)]
                if kind == "CronTask":
                    self.controller.crontask_event((ns, name), "MODIFIED", body)
                else:
                    self.controller.cronjob_event((ns, name), body, "MODIFIED")
        self._delivered = seen
        self._fill_caches()

    def _fill_caches(self) -> None:
        c = self.caches
        for store in (c.crontasks, c.cronjobs, c.jobs, c.pods, c.recover_thresholds, c.tasks):
            store.clear()  # type: ignore[attr-defined]
        for (kind, ns, name), obj in self.objects.items():
            obj = copy.deepcopy(obj)
            labels = obj["metadata"].get("labels") or {}
            if kind == "CronTask":
                c.crontasks[(ns, name)] = [slim_crontask(obj)]  # type: ignore[index]
                task = obj["spec"].get("task", "")
                c.tasks.setdefault(ns, []).append((name, task))  # type: ignore[attr-defined]
                seconds = recover_threshold(obj["spec"]) if task == "recover" else None
                if seconds is not None:
                    c.recover_thresholds.setdefault(ns, []).append(seconds)  # type: ignore[attr-defined]
            elif kind == "CronJob" and names.LABEL_CRONTASK in labels:
                c.cronjobs[(ns, labels[names.LABEL_CRONTASK])] = [slim_cronjob(obj)]  # type: ignore[index]
            elif kind == "Job":
                c.jobs.setdefault((ns, labels[names.LABEL_CRONTASK]), []).append(  # type: ignore[attr-defined]
                    job_result(obj))
            elif kind == "Pod":
                pod = pod_result(obj)
                c.pods.setdefault(pod.job_uid, []).append(pod)  # type: ignore[attr-defined]

    def reconcile(self, name: str = "process", *, deliver: bool = True) -> str:
        result = asyncio.run(self.controller.reconcile_key(("ns", name)))
        if deliver:
            self.deliver()
        return result

    def writes(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "event"]

    # -- the writer protocol (what kube.Kube does against a real API server) ----------------
    async def check_create(self, manifest: Mapping[str, Any]) -> None:
        self.calls.append(("create-dry-run", manifest["metadata"]["name"]))
        if ("CronJob", "ns", manifest["metadata"]["name"]) in self.objects:
            raise AlreadyExists(manifest["metadata"]["name"])
        if self.reject:
            raise Rejected(422, self.reject)

    async def apply_cronjob(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("apply", manifest["metadata"]["name"]))
        if self.reject:
            raise Rejected(422, self.reject)
        key = ("CronJob", "ns", manifest["metadata"]["name"])
        obj = copy.deepcopy(dict(manifest))
        before = self.objects.get(key)
        obj["metadata"]["uid"] = before["metadata"]["uid"] if before else "cj"
        obj["status"] = (before or {}).get("status", {})
        self._bump(obj)
        self.objects[key] = obj
        return copy.deepcopy(obj)

    async def suspend_cronjob(self, namespace: str, name: str, uid: str) -> dict[str, Any]:
        self.calls.append(("suspend", name))
        obj = self.objects[("CronJob", namespace, name)]
        obj["spec"]["suspend"] = True
        self._bump(obj)
        return copy.deepcopy(obj)

    async def delete_cronjob(self, namespace: str, name: str, uid: str) -> bool:
        self.calls.append(("delete", name))
        return self.objects.pop(("CronJob", namespace, name), None) is not None

    async def patch_status(self, namespace: str, name: str, resource_version: str | None,
                           patch: Mapping[str, Any]) -> dict[str, Any]:
        self.calls.append(("status", name))
        while self.during_write:
            self.during_write.pop(0)()
        obj = self.objects[("CronTask", namespace, name)]
        if self.stale_once or resource_version != obj["metadata"]["resourceVersion"]:
            self.stale_once = False
            raise Stale(name)
        obj["status"] = apply_merge_patch(obj.get("status") or {}, patch)
        self._bump(obj)
        return copy.deepcopy(obj)

    async def post_event(self, involved: Mapping[str, str], type_: str, reason: str,
                         message: str) -> None:
        self.calls.append(("event", reason))
        self.events.append((type_, reason, message))


def condition(status: Mapping[str, Any], type_: str) -> dict[str, Any]:
    return next(dict(c) for c in status.get("conditions") or [] if c["type"] == type_)
