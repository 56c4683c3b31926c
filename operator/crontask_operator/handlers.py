"""The Kopf handlers: thin, registered on a registry of our own by ``register``.

- create/update/resume of a CronTask: ``reconcile.sync`` (the CronJob and Ready);
- a timer per CronTask (``--resync-interval``): ``sync`` again (drift repair: a CronJob edited
  or deleted by hand comes back), then ``reconcile.fold`` (finished Jobs into status, Healthy);
- indexes over the Jobs and Pods our CronJobs create (by label) and over recover CronTasks'
  staleness thresholds, so the timer decides from memory instead of listing the cluster.

No handler watches our own status, and no handler returns a value (Kopf would store it in
status): status is written only through ``patch.status`` into fields the CRD declares. Handler
ids are explicit: index ids are also the names of the kwargs that carry the indexes.

CronTasks carry no finalizer. Kopf's ``@kopf.timer`` always asks for one (so that a timer is
stopped before its object goes), but nothing here needs to run at deletion: the CronJob is
garbage-collected through its owner reference, and a timer whose object is gone just stops. A
finalizer would only make deletion depend on a running operator with its RBAC intact, which
``helm uninstall`` breaks: it deletes the operator, its Role and the release's CronTasks at the
same moment, and the CronTasks stayed Terminating for good. ``register`` therefore clears the
flag on the timer, and Kopf then also removes the finalizer from objects that still carry one.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes_asyncio import client

from crontask_contract.durations import duration_seconds
from crontask_operator import kube, names, outcomes, reconcile
from crontask_operator.config import OperatorConfig
from crontask_operator.metrics import Metrics

CRONTASKS = (names.GROUP, names.VERSION, names.PLURAL)
OURS = {names.LABEL_CRONTASK: kopf.PRESENT}


def recover_stale(index: kopf.Index[str, int] | None, namespace: str) -> int | None:
    """The shortest recover.staleAfter among the namespace's recover CronTasks, if any."""
    if index is None or namespace not in index:
        return None
    values = list(index[namespace])
    return min(values) if values else None


@dataclass
class Runtime:
    """State shared by the handlers of one operator process."""

    config: OperatorConfig
    metrics: Metrics
    clock: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    ctx: reconcile.Context | None = None


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
        rt.ctx = reconcile.Context(kube=kube.Kube(client.ApiClient()),
                                   defaults=config.job_defaults, metrics=rt.metrics,
                                   allowed_images=config.allowed_images)

    @kopf.on.cleanup(id="disconnect", registry=registry)
    async def disconnect(**_: Any) -> None:
        if rt.ctx is not None and isinstance(rt.ctx.kube, kube.Kube):
            await rt.ctx.kube.close()

    @kopf.on.probe(id="crontasks", registry=registry)
    def probe(**_: Any) -> bool:
        """Liveness reports that the API client is ready (Kopf adds its own checks)."""
        return rt.ctx is not None

    @kopf.index(*CRONTASKS, id="recover_thresholds", registry=registry,
                when=lambda spec, **_: spec.get("task") == "recover")
    def recover_thresholds(spec: kopf.Spec, namespace: str | None, **_: Any) -> dict[str, int]:
        stale = (spec.get("recover") or {}).get("staleAfter", "30m")
        try:
            return {str(namespace): duration_seconds(stale)}
        except ValueError:
            return {}

    @kopf.index("batch", "v1", "jobs", labels=OURS, id="crontask_jobs", registry=registry)
    def crontask_jobs(body: kopf.Body, namespace: str | None,
                      **_: Any) -> dict[tuple[str, str], outcomes.JobResult]:
        job = outcomes.job_result(body)
        return {(str(namespace), job.crontask): job}

    @kopf.index("", "v1", "pods", labels=OURS, id="crontask_pods", registry=registry)
    def crontask_pods(body: kopf.Body, namespace: str | None,
                      **_: Any) -> dict[tuple[str, str], outcomes.PodResult]:
        pod = outcomes.pod_result(body)
        return {(str(namespace), pod.job_name): pod}

    @kopf.on.resume(*CRONTASKS, id="reconcile", registry=registry)
    @kopf.on.create(*CRONTASKS, id="reconcile", registry=registry)
    @kopf.on.update(*CRONTASKS, field="spec", id="reconcile", registry=registry)
    async def reconcile_crontask(body: kopf.Body, patch: kopf.Patch, reason: str,
                                 namespace: str | None, logger: kopf.Logger,
                                 **kwargs: Any) -> None:
        assert rt.ctx is not None, "startup handler ran"
        thresholds = kwargs.get("recover_thresholds")
        try:
            await reconcile.sync(rt.ctx, body=body, patch=patch, now=rt.clock(),
                                 namespace_recover_stale=recover_stale(thresholds,
                                                                       str(namespace)),
                                 trigger=str(reason), logger=logger)
        except client.ApiException as exc:
            rt.metrics.errors.labels("ApiError").inc()
            raise kopf.TemporaryError(f"API error {exc.status}: {kube.server_message(exc)}",
                                      delay=10) from exc

    @kopf.timer(*CRONTASKS, interval=config.resync_interval, id="resync", registry=registry)
    async def resync(body: kopf.Body, patch: kopf.Patch, namespace: str | None,
                     name: str | None, logger: kopf.Logger, **kwargs: Any) -> None:
        if rt.ctx is None:
            return
        recover_thresholds: kopf.Index[str, int] = kwargs["recover_thresholds"]
        crontask_jobs: kopf.Index[tuple[str, str], outcomes.JobResult] = kwargs["crontask_jobs"]
        crontask_pods: kopf.Index[tuple[str, str], outcomes.PodResult] = kwargs["crontask_pods"]
        now = rt.clock()
        ns = str(namespace)
        try:
            await reconcile.sync(rt.ctx, body=body, patch=patch, now=now,
                                 namespace_recover_stale=recover_stale(recover_thresholds, ns),
                                 trigger="resync", logger=logger)
        except client.ApiException as exc:
            rt.metrics.errors.labels("ApiError").inc()
            logger.warning("resync: API error %s: %s", exc.status, kube.server_message(exc))
        jobs = list(crontask_jobs.get((ns, str(name)), ()))
        pods = [p for j in jobs for p in crontask_pods.get((ns, j.name), ())]
        reconcile.fold(rt.ctx, body=body, patch=patch, now=now, jobs=jobs, pods=pods)

    _without_finalizer(registry, "resync")
    return rt


def _without_finalizer(registry: kopf.OperatorRegistry, handler_id: str) -> None:
    """Let a timer run without putting Kopf's finalizer on its objects (see the module doc).

    Kopf has no public switch for this (nolar/kopf#1074), so the registered handler is
    replaced by a copy with ``requires_finalizer=False``; a unit test pins the behaviour
    against the pinned Kopf.
    """
    spawning = registry._spawning
    found = [h for h in spawning._handlers if h.id == handler_id]
    if len(found) != 1:
        raise RuntimeError(f"expected one spawning handler {handler_id!r}, found {len(found)}")
    spawning._handlers = [dataclasses.replace(h, requires_finalizer=False)
                          if h.id == handler_id else h for h in spawning._handlers]
