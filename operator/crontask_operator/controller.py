"""The event-driven controller: events map to CronTask keys, workers reconcile keys.

The shape of Kubernetes' own controllers (sample-controller, CronJob controller v2):

- Kopf watches CronTasks, and, filtered by the API server to our label, the CronJobs, Jobs and
  Pods the operator's CronTasks own, and keeps them in indexes (the caches; Kopf fills every
  index from its initial listing before any handler runs). ``handlers`` only maps each event
  to the owning CronTask's key and calls ``enqueue``; nothing is decided in a handler.
- ``WorkQueue`` merges a burst of events into one pending reconcile per key; ``workers``
  take keys one at a time, never the same key twice at once.
- ``reconcile_key`` reads the key's world from the caches (never from the API server), asks
  the pure functions of ``reconcile`` what to do, writes what differs (server-side apply; a
  status merge patch only when the status changes) and posts the events.
- The only timer is a slow safety resync per key, jittered so that CronTasks never resync in
  step; a key whose reconcile failed comes back with an exponential backoff.

Reads after the operator's own writes: the watch may not have delivered the object it just
wrote when the next reconcile of that key runs, so the response of each write is kept as an
overlay and used until the cache moves past the version it replaced. A status computed from a
stale version anyway is refused by the API server (its resourceVersion is a precondition),
so a run is never counted twice.

Deleted Jobs and Pods: a Job can be deleted (TTL, history limit, by hand) right after it
finished; the last state the watch showed for it is kept as a tombstone until the run is
folded, so a fast deletion does not lose a run while the operator is running.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from crontask_operator import images, reconcile, schemacheck
from crontask_operator.crd import status_schema
from crontask_operator.cronjob import JobDefaults
from crontask_operator.kube import AlreadyExists, NamespaceTerminating, Rejected, Stale
from crontask_operator.metrics import Metrics
from crontask_operator.outcomes import JobResult, PodResult, run_of
from crontask_operator.patches import merge_patch
from crontask_operator.reconcile import (
    APPLY,
    CONFLICT,
    CREATE,
    REMOVE,
    SUSPEND,
    CronJobOutcome,
    CronJobPlan,
    Observed,
)
from crontask_operator.workqueue import ShutDown, WorkQueue

log = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, CronTask name)."""
MAX_TOMBSTONES: Final = 200
TOMBSTONE_SECONDS: Final = 3600.0


class Writer(Protocol):
    """The writes a reconcile makes (``kube.Kube``; a recording fake in unit tests)."""

    async def check_create(self, manifest: Mapping[str, Any]) -> None: ...
    async def apply_cronjob(self, manifest: Mapping[str, Any]) -> dict[str, Any]: ...
    async def suspend_cronjob(self, namespace: str, name: str, uid: str) -> dict[str, Any]: ...
    async def delete_cronjob(self, namespace: str, name: str, uid: str) -> bool: ...
    async def patch_status(self, namespace: str, name: str, resource_version: str | None,
                           patch: Mapping[str, Any]) -> dict[str, Any]: ...
    async def post_event(self, involved: Mapping[str, str], type_: str, reason: str,
                         message: str) -> None: ...


class Cache(Protocol):
    """A read-only index: Kopf's ``kopf.Index`` (a key to a collection of values)."""

    def __contains__(self, key: object) -> bool: ...
    def __getitem__(self, key: Any) -> Iterable[Any]: ...
    def __iter__(self) -> Any: ...


@dataclass
class Caches:
    """The indexes the handlers' Kopf indexing fills (see ``handlers``)."""

    crontasks: Cache
    """(namespace, name) -> the CronTask (metadata, spec, status)."""
    cronjobs: Cache
    """(namespace, CronTask name) -> the labelled CronJob."""
    jobs: Cache
    """(namespace, CronTask name) -> JobResult."""
    pods: Cache
    """Job UID -> PodResult."""
    recover_thresholds: Cache
    """namespace -> recover.staleAfter seconds of each recover CronTask."""
    tasks: Cache
    """namespace -> (name, task) of each CronTask."""


@dataclass
class _Overlay:
    replaced: str | None
    """The resourceVersion the write replaced (None: the object did not exist)."""
    body: Mapping[str, Any] | None
    """The object the write returned (None: it was deleted)."""


@dataclass
class _Tombstones:
    jobs: dict[str, tuple[float, JobResult]] = field(default_factory=dict)
    pods: dict[str, dict[str, tuple[float, PodResult]]] = field(default_factory=dict)


def _first(values: Iterable[Any] | None) -> Any:
    for value in values or ():
        return value
    return None


def _rv(body: Mapping[str, Any] | None) -> str | None:
    if not body:
        return None
    value = (body.get("metadata") or {}).get("resourceVersion")
    return str(value) if value is not None else None


class Controller:
    def __init__(self, writer: Writer, job_defaults: JobDefaults, metrics: Metrics, *,
                 resync_seconds: float, resync_jitter: float = 0.2, workers: int = 4,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
                 rng: random.Random | None = None,
                 checks: Sequence[reconcile.Check] | None = None) -> None:
        self.writer = writer
        self.job_defaults = job_defaults
        self.metrics = metrics
        self.resync_seconds = resync_seconds
        self.resync_jitter = resync_jitter
        self.worker_count = workers
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not secrets
        self.checks = tuple(checks) if checks is not None else (
            images.image_check(images.AllowList.parse((), job_defaults.image)),)
        """Policies on valid specs (see reconcile.Check). Without any given, the image
        allow-list admits only the default jobs image's repository: leaving it out never
        widens what runs."""
        self.queue: WorkQueue[Key] = WorkQueue()
        self.caches: Caches | None = None
        self._triggers: dict[Key, str] = {}
        """Why a key is queued now (the first event since it was last taken)."""
        self._delayed_triggers: dict[Key, str] = {}
        """Why a key will be queued later: resync, requeue or retry."""
        self._generations: dict[Key, Any] = {}
        self._tasks_by_key: dict[Key, str] = {}
        self._crontask_overlay: dict[Key, _Overlay] = {}
        self._cronjob_overlay: dict[Key, _Overlay] = {}
        self._written_cronjob_rv: dict[Key, str] = {}
        self._tombstones: dict[Key, _Tombstones] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._schema = status_schema()

    # -- events -> keys ---------------------------------------------------------------------
    def bind(self, caches: Caches) -> None:
        """Attach the caches (Kopf's live indexes) the first time a handler runs."""
        if self.caches is None:
            self.caches = caches

    def enqueue(self, key: Key, trigger: str) -> None:
        if self.queue.add(key):
            self._triggers[key] = trigger
            log.debug("queued %s/%s (%s)", key[0], key[1], trigger)
        self.metrics.queue_depth.set(len(self.queue))

    def crontask_event(self, key: Key, event_type: str | None, body: Mapping[str, Any]) -> bool:
        """A CronTask changed. Queue it unless only its status moved (our own write's echo);
        a recover task's change also queues every process task of its namespace (their
        deadlines depend on its threshold)."""
        self._passed(self._crontask_overlay, key, body, event_type)
        meta = body.get("metadata") or {}
        spec = body.get("spec")
        task = str(spec.get("task", "")) if isinstance(spec, Mapping) else ""
        generation = (meta.get("generation"), meta.get("deletionTimestamp"))
        previous_task = self._tasks_by_key.get(key)
        changed = (event_type in (None, "ADDED", "DELETED")
                   or self._generations.get(key) != generation)
        if event_type == "DELETED":
            self._generations.pop(key, None)
            self._tasks_by_key.pop(key, None)
        else:
            self._generations[key] = generation
            self._tasks_by_key[key] = task
        if changed:
            self.enqueue(key, "crontask")
            if "recover" in (task, previous_task):
                for other in self._process_tasks(key[0]):
                    self.enqueue(other, "recover")
        return changed

    def _process_tasks(self, namespace: str) -> list[Key]:
        if self.caches is None or namespace not in self.caches.tasks:
            return []
        return sorted((namespace, name) for name, task in self.caches.tasks[namespace]
                      if task == "process")

    @staticmethod
    def _passed(overlays: dict[Key, _Overlay], key: Key, body: Mapping[str, Any],
                event_type: str | None) -> None:
        """The watch delivered a version after the one our write replaced: the cache is at
        least as new as the overlay now (or the object is gone), so the overlay goes."""
        overlay = overlays.get(key)
        if overlay is not None and (event_type == "DELETED" or _rv(body) != overlay.replaced):
            del overlays[key]

    def cronjob_event(self, key: Key, body: Mapping[str, Any],
                      event_type: str | None = None) -> bool:
        """Our CronJob changed (a hand edit or deletion, or the CronJob controller's status).
        The echo of our own write is not news."""
        self._passed(self._cronjob_overlay, key, body, event_type)
        if event_type != "DELETED" and self._written_cronjob_rv.get(key) == _rv(body):
            return False
        self.enqueue(key, "cronjob")
        return True

    def job_event(self, key: Key, event_type: str | None, job: JobResult) -> bool:
        """A Job of ours finished or went away (a running Job's progress is not news)."""
        log.debug("job %s/%s %s finished=%s", key[0], job.name, event_type, job.finished)
        if event_type == "DELETED" and job.finished and job.is_run:
            stones = self._tombstones.setdefault(key, _Tombstones())
            stones.jobs[job.uid] = (time.monotonic(), job)
            self._trim(stones)
        if event_type == "DELETED" or job.finished:
            self.enqueue(key, "job")
            return True
        return False

    def pod_event(self, key: Key, event_type: str | None, pod: PodResult) -> bool:
        """A pod of ours ended or went away."""
        log.debug("pod %s/%s %s terminated=%s", key[0], pod.name, event_type, pod.terminated)
        if event_type == "DELETED" and pod.terminated and pod.job_uid:
            stones = self._tombstones.setdefault(key, _Tombstones())
            stones.pods.setdefault(pod.job_uid, {})[pod.uid or pod.name] = (time.monotonic(), pod)
            self._trim(stones)
        if event_type == "DELETED" or pod.terminated:
            self.enqueue(key, "pod")
            return True
        return False

    def _trim(self, stones: _Tombstones) -> None:
        cutoff = time.monotonic() - TOMBSTONE_SECONDS
        stones.jobs = dict(sorted(((u, v) for u, v in stones.jobs.items() if v[0] >= cutoff),
                                  key=lambda kv: kv[1][0])[-MAX_TOMBSTONES:])
        stones.pods = {j: p for j, p in stones.pods.items()
                       if any(seen >= cutoff for seen, _ in p.values())}

    # -- workers ------------------------------------------------------------------------------
    def start(self) -> None:
        if not self._workers:
            self._workers = [asyncio.create_task(self._worker(i), name=f"crontask-worker-{i}")
                             for i in range(self.worker_count)]

    async def stop(self) -> None:
        self.queue.shutdown()
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def _worker(self, number: int) -> None:
        while True:
            try:
                key, waited = await self.queue.get()
            except ShutDown:
                return
            self.metrics.queue_depth.set(len(self.queue))
            self.metrics.queue_wait.observe(waited)
            trigger = self._triggers.pop(key, None) or self._delayed_triggers.pop(key, "resync")
            started = time.perf_counter()
            try:
                result = await self.reconcile_key(key, trigger)
            except asyncio.CancelledError:
                raise
            except Stale:
                self.metrics.errors.labels("Stale").inc()
                result = "stale"
                self._later(key, None, "retry")
            except Exception as exc:  # the worker must outlive any one CronTask
                self.metrics.errors.labels(type(exc).__name__).inc()
                log.warning("reconcile of %s/%s failed: %s", key[0], key[1], exc,
                            exc_info=not _is_api_error(exc))
                result = "error"
                delay = self._later(key, None, "retry")
                log.info("retrying %s/%s in %.1fs", key[0], key[1], delay)
            finally:
                self.queue.done(key)
                self.metrics.reconcile_seconds.observe(time.perf_counter() - started)
            self.metrics.reconciles.labels(trigger, result).inc()

    def _later(self, key: Key, delay: float | None, why: str) -> float:
        """Queue ``key`` after ``delay`` (None: its failure backoff), remembering why."""
        if delay is None:
            delay = self.queue.backoff(key)
        if self.queue.add_after(key, delay):
            self._delayed_triggers[key] = why
        return delay

    def _resync_later(self, key: Key) -> None:
        spread = self.resync_jitter
        self._later(key, self.resync_seconds * self.rng.uniform(1 - spread, 1 + spread),
                    "resync")

    # -- one reconcile ---------------------------------------------------------------------
    def observe(self, key: Key) -> Observed | None:
        """The key's world, from the caches and the overlays of our own writes."""
        assert self.caches is not None, "caches are bound before the first key is queued"
        ns, name = key
        body = self._crontask(key)
        if body is None:
            return None
        meta = body.get("metadata") or {}
        stones = self._tombstones.get(key, _Tombstones())
        cached_jobs = list(self.caches.jobs[key]) if key in self.caches.jobs else []
        live = {j.uid for j in cached_jobs}
        buried = [j for uid, (_, j) in sorted(stones.jobs.items()) if uid not in live]
        jobs = cached_jobs + buried
        pods: list[PodResult] = []
        for job in jobs:
            current = list(self.caches.pods[job.uid]) if job.uid in self.caches.pods else []
            names = {p.uid or p.name for p in current}
            pods += current + [p for uid, (_, p) in sorted(stones.pods.get(job.uid, {}).items())
                               if uid not in names]
        thresholds = list(self.caches.recover_thresholds[ns]) \
            if ns in self.caches.recover_thresholds else []
        status = body.get("status")
        return Observed(
            name=name, namespace=ns, uid=str(meta.get("uid") or ""),
            generation=meta.get("generation") if type(meta.get("generation")) is int else None,
            resource_version=_rv(body),
            spec=body.get("spec"), status=status if isinstance(status, Mapping) else {},
            cronjob=self._cronjob(key), jobs=tuple(jobs),
            existing_jobs=frozenset(j.uid for j in jobs), pods=tuple(pods),
            recover_stale=min(thresholds) if thresholds else None,
            tombstones=frozenset(j.uid for j in buried))

    def _crontask(self, key: Key) -> Mapping[str, Any] | None:
        assert self.caches is not None
        cached = _first(self.caches.crontasks[key]) if key in self.caches.crontasks else None
        overlay = self._crontask_overlay.get(key)
        if overlay is not None:
            if cached is not None and _rv(cached) == overlay.replaced:
                return overlay.body
            del self._crontask_overlay[key]
        return dict(cached) if cached is not None else None

    def _cronjob(self, key: Key) -> Mapping[str, Any] | None:
        assert self.caches is not None
        cached = _first(self.caches.cronjobs[key]) if key in self.caches.cronjobs else None
        overlay = self._cronjob_overlay.get(key)
        if overlay is not None:
            if _rv(cached) == overlay.replaced:
                return overlay.body
            del self._cronjob_overlay[key]
        return dict(cached) if cached is not None else None

    def forget(self, key: Key) -> None:
        self._crontask_overlay.pop(key, None)
        self._cronjob_overlay.pop(key, None)
        self._written_cronjob_rv.pop(key, None)
        self._tombstones.pop(key, None)
        self._triggers.pop(key, None)
        self._delayed_triggers.pop(key, None)
        self.queue.discard(key)

    async def reconcile_key(self, key: Key, trigger: str = "resync") -> str:
        """Reconcile one CronTask; returns the result label for the metrics."""
        obs = self.observe(key)
        if obs is None:
            self.forget(key)
            return "gone"
        now = self.clock()
        plan = reconcile.plan_cronjob(obs, self.job_defaults, now, self.checks)
        try:
            outcome = await self._execute(key, obs, plan)
        except NamespaceTerminating:
            return "gone"  # the namespace, and the CronTask with it, is being deleted
        decision = reconcile.desired_status(obs, plan, outcome, now)
        patch = merge_patch(obs.status, decision.status)
        if patch:
            problems = schemacheck.errors(decision.status, self._schema, "status")
            if problems:
                self.metrics.errors.labels("InvalidStatus").inc()
                log.error("refusing to write a status outside the CRD's schema for %s/%s: %s",
                          key[0], key[1], "; ".join(problems))
                return "error"
            written = await self.writer.patch_status(obs.namespace, obs.name,
                                                     obs.resource_version, patch)
            self._crontask_overlay[key] = _Overlay(obs.resource_version, written)
        if decision.new_runs or decision.requeue_after is not None:
            log.debug("%s/%s: folded %s; look again in %s s", key[0], key[1],
                      [r.job_name for r in decision.new_runs], decision.requeue_after)
        if self._drop_folded(key, obs, now):
            # Their UIDs leave countedJobs on the next reconcile: soon, not at the resync.
            self._later(key, 1.0, "requeue")
        involved = {"name": obs.name, "namespace": obs.namespace, "uid": obs.uid}
        for event in decision.events:
            await self.writer.post_event(involved, event.type, event.reason, event.message)
        self._count(obs, decision, now)
        self.queue.forget(key)
        if decision.requeue_after is not None:
            self._later(key, decision.requeue_after, "requeue")
        self._resync_later(key)
        if plan.action == CONFLICT or outcome.conflict:
            return "conflict"
        if outcome.rejected is not None:
            return "rejected"
        return "refused" if plan.refusal is not None else "ok"

    async def _execute(self, key: Key, obs: Observed, plan: CronJobPlan) -> CronJobOutcome:
        """Carry out the plan for the CronJob; what became of it."""
        actual = obs.cronjob
        replaced = _rv(actual)
        try:
            if plan.action == CREATE and plan.manifest is not None:
                try:
                    await self.writer.check_create(plan.manifest)
                except AlreadyExists:
                    self.metrics.errors.labels("CronJobConflict").inc()
                    return CronJobOutcome(None, conflict=True)
                written = await self.writer.apply_cronjob(plan.manifest)
                self._wrote(key, replaced, written, plan.kind)
                return CronJobOutcome(written)
            if plan.action == APPLY and plan.manifest is not None:
                written = await self.writer.apply_cronjob(plan.manifest)
                self._wrote(key, replaced, written, plan.kind)
                return CronJobOutcome(written)
        except Rejected as exc:
            self.metrics.errors.labels("Rejected").inc()
            suspended = await self._suspend(key, actual)
            return CronJobOutcome(suspended, rejected=exc.message)
        if plan.action == SUSPEND:
            return CronJobOutcome(await self._suspend(key, actual))
        if plan.action == REMOVE and actual is not None:
            uid = str((actual.get("metadata") or {}).get("uid") or "")
            await self.writer.delete_cronjob(obs.namespace, obs.name, uid)
            self._cronjob_overlay[key] = _Overlay(replaced, None)
            log.info("deleted CronJob %s/%s: %s", obs.namespace, obs.name,
                     plan.refusal.message if plan.refusal else "")
            return CronJobOutcome(None)
        if plan.action == CONFLICT:
            self.metrics.errors.labels("CronJobConflict").inc()
        return CronJobOutcome(actual if plan.action != CONFLICT else None)

    async def _suspend(self, key: Key, actual: Mapping[str, Any] | None
                       ) -> Mapping[str, Any] | None:
        if actual is None:
            return None
        if (actual.get("spec") or {}).get("suspend"):
            return actual
        meta = actual.get("metadata") or {}
        written = await self.writer.suspend_cronjob(str(meta.get("namespace") or key[0]),
                                                    str(meta.get("name") or key[1]),
                                                    str(meta.get("uid") or ""))
        self._wrote(key, _rv(actual), written, "suspended")
        return written

    def _wrote(self, key: Key, replaced: str | None, written: Mapping[str, Any],
               kind: str) -> None:
        self._cronjob_overlay[key] = _Overlay(replaced, written)
        rv = _rv(written)
        if rv is not None:
            self._written_cronjob_rv[key] = rv
        self.metrics.applies.labels(kind).inc()
        log.info("CronJob %s/%s %s", key[0], key[1], kind)

    def _drop_folded(self, key: Key, obs: Observed, now: dt.datetime) -> bool:
        """Tombstones whose run this reconcile accounted for (in the status it just wrote, or
        already there) are no longer needed. Only those this reconcile saw: a Job that finished
        and went away while it was writing is folded by the next one. True if any went."""
        stones = self._tombstones.get(key)
        if stones is None:
            return False
        seen = {j.uid: j for j in obs.jobs if j.uid in obs.tombstones}
        dropped = False
        for uid, (_, job) in list(stones.jobs.items()):
            if uid in seen and seen[uid] == job and run_of(job, obs.pods, now) is not None:
                del stones.jobs[uid]
                stones.pods.pop(uid, None)
                dropped = True
        for job_uid in list(stones.pods):
            if job_uid not in stones.jobs and job_uid not in {j.uid for j in obs.jobs}:
                del stones.pods[job_uid]
        if not stones.jobs and not stones.pods:
            del self._tombstones[key]
        return dropped

    def _count(self, obs: Observed, decision: reconcile.StatusDecision, now: dt.datetime) -> None:
        task = str((obs.spec or {}).get("task", "")) if isinstance(obs.spec, Mapping) else ""
        for run in decision.new_runs:
            self.metrics.runs.labels(obs.namespace, task, run.outcome).inc()
            for stage, errors in run.stage_errors.items():
                self.metrics.stage_errors.labels(obs.namespace, task, stage).inc(errors.count)
            if run.completion_time:
                finished = dt.datetime.fromisoformat(run.completion_time.replace("Z", "+00:00"))
                self.metrics.fold_latency.observe(max(0.0, (now - finished).total_seconds()))
        if decision.missed_job is not None:
            self.metrics.missed_runs.labels(obs.namespace, task).inc()


def _is_api_error(exc: BaseException) -> bool:
    return type(exc).__name__ in ("ApiException", "ClientConnectorError", "TimeoutError",
                                  "ServerDisconnectedError")
