"""The Kopf wiring: caches (indexes) and event handlers that only map events to CronTask keys.

Kopf watches four kinds and keeps what the controller needs in indexes:

- CronTasks (all of them, in the watched namespaces): the object itself; the recover
  thresholds per namespace; the tasks per namespace;
- CronJobs, Jobs and Pods carrying ``crontask.dev/crontask``: the API server itself filters
  these streams (``settings.watching.label_selectors``, see ``config.kopf_settings``), so Pods
  and Jobs that are not the operator's are never sent to it.

Each ``on.event`` handler maps an event to the owning CronTask's key and asks the controller for
one reconcile of it; nothing else happens in a handler. Only public Kopf API is used:
``on.event`` and ``index`` handlers need no finalizer, so CronTasks carry none, and deleting
one (or ``helm uninstall`` with CronTasks present) never waits for a running operator. No
handler returns a value, writes through Kopf's patch, or reacts to changes Kopf tracks itself:
Kopf never writes to a CronTask at all.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from kubernetes_asyncio import client

from crontask_contract.durations import DurationError, duration_seconds
from crontask_operator import defaults, images, kube, names, outcomes
from crontask_operator.config import OperatorConfig
from crontask_operator.controller import Caches, Controller, Key
from crontask_operator.metrics import Metrics

CRONTASKS = (names.GROUP, names.VERSION, names.PLURAL)
CRONJOBS = ("batch", "v1", "cronjobs")
JOBS = ("batch", "v1", "jobs")
PODS = ("", "v1", "pods")
OURS = {names.LABEL_CRONTASK: kopf.PRESENT}
INDEXES = ("crontask_objects", "crontask_cronjobs", "crontask_jobs", "crontask_pods",
           "recover_thresholds", "crontask_tasks")


@dataclass
class Runtime:
    """State shared by the handlers of one operator process."""

    config: OperatorConfig
    metrics: Metrics
    controller: Controller | None = None
    kube: kube.Kube | None = None


def slim_crontask(body: Mapping[str, Any]) -> dict[str, Any]:
    """What the controller needs of a CronTask (no managedFields, no annotations)."""
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "generation", "resourceVersion", "deletionTimestamp")
    return {"metadata": {k: copy.deepcopy(meta[k]) for k in keep if k in meta},
            "spec": copy.deepcopy(body.get("spec")), "status": copy.deepcopy(body.get("status"))}


def slim_cronjob(body: Mapping[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata") or {}
    keep = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations",
            "ownerReferences")
    return {"metadata": {k: copy.deepcopy(meta[k]) for k in keep if k in meta},
            "spec": copy.deepcopy(body.get("spec")), "status": copy.deepcopy(body.get("status"))}


def owner_key(namespace: str | None, labels: Mapping[str, Any]) -> Key:
    return str(namespace), str(labels.get(names.LABEL_CRONTASK, ""))


def recover_threshold(spec: Mapping[str, Any]) -> int | None:
    """A recover CronTask's staleAfter in seconds, if it has a valid one."""
    default = defaults.TASK_PARAMS["recover"]["staleAfter"]
    block = spec.get("recover")
    stale = block.get("staleAfter", default) if isinstance(block, Mapping) else default
    if not isinstance(stale, str | int) or isinstance(stale, bool):
        return None
    try:
        return duration_seconds(stale)
    except DurationError:
        return None


def register(registry: kopf.OperatorRegistry, config: OperatorConfig,
             metrics: Metrics | None = None) -> Runtime:
    """Register every handler on ``registry``; returns the runtime for tests to inspect."""
    rt = Runtime(config=config, metrics=metrics or Metrics())

    @kopf.on.login(id="login", registry=registry)
    async def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        """Kopf's own client logs in the way ours does (a bare registry has no login handler):
        the in-cluster service account, else $KUBECONFIG or ~/.kube/config."""
        return await kopf.login_via_async_client(**kwargs)

    @kopf.on.startup(id="connect", registry=registry)
    async def connect(**_: Any) -> None:
        await kube.load_config()
        rt.kube = kube.Kube(client.ApiClient(), rt.metrics)
        rt.controller = Controller(
            rt.kube, config.job_defaults, rt.metrics, resync_seconds=config.resync_interval,
            resync_jitter=config.resync_jitter, workers=config.workers,
            clock=lambda: dt.datetime.now(dt.UTC),
            checks=(images.image_check(config.allowed_images),))
        rt.controller.start()

    @kopf.on.cleanup(id="disconnect", registry=registry)
    async def disconnect(**_: Any) -> None:
        if rt.controller is not None:
            await rt.controller.stop()
        if rt.kube is not None:
            await rt.kube.close()

    @kopf.on.probe(id="crontasks", registry=registry)
    def probe(**_: Any) -> bool:
        """Liveness: the controller's workers run (Kopf adds its own checks)."""
        return rt.controller is not None

    # -- caches -----------------------------------------------------------------------------
    @kopf.index(*CRONTASKS, id="crontask_objects", registry=registry)
    async def crontask_objects(body: kopf.Body, namespace: str | None, name: str | None,
                         **_: Any) -> dict[Key, dict[str, Any]]:
        return {(str(namespace), str(name)): slim_crontask(body)}

    @kopf.index(*CRONTASKS, id="recover_thresholds", registry=registry,
                when=lambda spec, **_: spec.get("task") == "recover")
    async def recover_thresholds(spec: kopf.Spec, namespace: str | None,
                           **_: Any) -> dict[str, int]:
        seconds = recover_threshold(spec)
        return {} if seconds is None else {str(namespace): seconds}

    @kopf.index(*CRONTASKS, id="crontask_tasks", registry=registry)
    async def crontask_tasks(spec: kopf.Spec, namespace: str | None, name: str | None,
                       **_: Any) -> dict[str, tuple[str, str]]:
        return {str(namespace): (str(name), str(spec.get("task", "")))}

    @kopf.index(*CRONJOBS, labels=OURS, id="crontask_cronjobs", registry=registry)
    async def crontask_cronjobs(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                          **_: Any) -> dict[Key, dict[str, Any]]:
        return {owner_key(namespace, labels): slim_cronjob(body)}

    @kopf.index(*JOBS, labels=OURS, id="crontask_jobs", registry=registry)
    async def crontask_jobs(body: kopf.Body, namespace: str | None, labels: kopf.Labels,
                      **_: Any) -> dict[Key, outcomes.JobResult]:
        return {owner_key(namespace, labels): outcomes.job_result(body)}

    @kopf.index(*PODS, labels=OURS, id="crontask_pods", registry=registry)
    async def crontask_pods(body: kopf.Body, **_: Any) -> dict[str, outcomes.PodResult]:
        pod = outcomes.pod_result(body)
        return {pod.job_uid: pod} if pod.job_uid else {}

    # -- events -> keys ------------------------------------------------------------------
    def controller(kwargs: Mapping[str, Any]) -> Controller | None:
        ctl = rt.controller
        if ctl is not None:
            ctl.bind(Caches(
                crontasks=kwargs["crontask_objects"], cronjobs=kwargs["crontask_cronjobs"],
                jobs=kwargs["crontask_jobs"], pods=kwargs["crontask_pods"],
                recover_thresholds=kwargs["recover_thresholds"], tasks=kwargs["crontask_tasks"]))
        return ctl

    def seen(resource: str, queued: bool) -> None:
        rt.metrics.events_seen.labels(resource, "yes" if queued else "no").inc()

    @kopf.on.event(*CRONTASKS, id="crontask_events", registry=registry)
    async def on_crontask(type: str | None, body: kopf.Body, namespace: str | None,
                    name: str | None, **kwargs: Any) -> None:
        ctl = controller(kwargs)
        if ctl is not None:
            seen("crontasks", ctl.crontask_event((str(namespace), str(name)), type, body))

    @kopf.on.event(*CRONJOBS, labels=OURS, id="cronjob_events", registry=registry)
    async def on_cronjob(type: str | None, body: kopf.Body, namespace: str | None,
                         labels: kopf.Labels, **kwargs: Any) -> None:
        ctl = controller(kwargs)
        if ctl is not None:
            seen("cronjobs", ctl.cronjob_event(owner_key(namespace, labels), body, type))

    @kopf.on.event(*JOBS, labels=OURS, id="job_events", registry=registry)
    async def on_job(type: str | None, body: kopf.Body, namespace: str | None,
               labels: kopf.Labels, **kwargs: Any) -> None:
        ctl = controller(kwargs)
        if ctl is not None:
            seen("jobs", ctl.job_event(owner_key(namespace, labels), type,
                                       outcomes.job_result(body)))

    @kopf.on.event(*PODS, labels=OURS, id="pod_events", registry=registry)
    async def on_pod(type: str | None, body: kopf.Body, namespace: str | None,
               labels: kopf.Labels, **kwargs: Any) -> None:
        ctl = controller(kwargs)
        if ctl is not None:
            seen("pods", ctl.pod_event(owner_key(namespace, labels), type,
                                       outcomes.pod_result(body)))

    return rt
