"""Leader election on a ``coordination.k8s.io/v1`` Lease, in the shape of client-go's.

With more than one replica, exactly one operator acts: it holds the Lease and renews it; the
others watch and index like the leader (a hot standby: their caches are full when they take
over) but never write. Why a Lease and not Kopf's peering: peering pauses Kopf's watches, not
the operator's own workers (a paused replica would go on reconciling from stale caches), replicas
of one Deployment share one priority (Kopf then pauses every one of them), and it needs two
cluster-scoped CRDs of its own. A Lease is what Kubernetes' own controllers use.

The rules, with client-go's (and kube-controller-manager's) defaults of 15 s / 10 s / 2 s:

- A candidate takes the Lease when nobody holds it (created, or released), or when its record
  has not changed for a whole lease duration *as seen on the candidate's own monotonic clock*:
  clocks of two machines are never compared.
- The leader renews the Lease every retry period. Its right to act lasts ``renew_deadline``
  from its last successful renewal, on its own monotonic clock (which goes on while the
  process is frozen). Every write the operator makes first checks that right (``check``), so a
  leader that was frozen, partitioned or starved stops writing by itself, at least
  ``lease_duration - renew_deadline`` (5 s) before a candidate may take the Lease over.
- A leader that loses the Lease never acts again: the process exits, and the kubelet restarts
  it as a candidate (client-go does the same).
- On a clean stop (SIGTERM: a rollout, a drain, ``kubectl delete pod``) the leader releases the
  Lease (no holder), and a candidate takes it within one retry period.

Each write carries the resourceVersion it read (a 409 means somebody else wrote first), so two
candidates can never both believe they took the Lease.

``next_step`` (what to write, if anything) and ``record_of`` (a Lease object, hostile like any
outside input, to a record) are pure; ``LeaderElector`` does the I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

CREATE: Final = "create"
UPDATE: Final = "update"
WAIT: Final = "wait"
MAX_LEASE_SECONDS: Final = 3600
"""A Lease record claiming a longer duration is read as this (a hostile or broken record must
not lock every candidate out for longer than an hour)."""
MAX_IDENTITY: Final = 253


class NotLeading(Exception):
    """This replica may not act now: it does not hold the Lease, or its right has lapsed."""


@dataclass(frozen=True)
class Timing:
    """Lease duration, renew deadline and retry period, in seconds."""

    lease_duration: float
    renew_deadline: float
    retry_period: float

    def problems(self) -> list[str]:
        """Why these timings cannot guarantee one leader at a time (empty: they can)."""
        out = []
        if not 0 < self.retry_period < self.renew_deadline:
            out.append("the retry period must be positive and shorter than the renew deadline")
        if not self.renew_deadline < self.lease_duration:
            out.append("the renew deadline must be shorter than the lease duration")
        if self.lease_duration > MAX_LEASE_SECONDS:
            out.append(f"the lease duration must be at most {MAX_LEASE_SECONDS} s")
        return out


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease's spec says, as far as election goes."""

    holder: str = ""
    """Empty: nobody holds it (released, or never taken)."""
    duration: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _int(value: Any, low: int, high: int) -> int:
    if type(value) is not int:
        return low
    return max(low, min(high, value))


def record_of(lease: Any) -> LeaseRecord:
    """The record of a Lease object as the API server sent it. Never raises: a missing or
    malformed field reads as absent (a holder that is not a string holds nothing), a duration
    is clipped to [0, MAX_LEASE_SECONDS]."""
    spec = lease.get("spec") if isinstance(lease, Mapping) else None
    if not isinstance(spec, Mapping):
        return LeaseRecord()
    return LeaseRecord(
        holder=_text(spec.get("holderIdentity"), MAX_IDENTITY),
        duration=_int(spec.get("leaseDurationSeconds"), 0, MAX_LEASE_SECONDS),
        acquire_time=_text(spec.get("acquireTime"), 64) or None,
        renew_time=_text(spec.get("renewTime"), 64) or None,
        transitions=_int(spec.get("leaseTransitions"), 0, 2**31 - 1),
    )


@dataclass(frozen=True)
class Observation:
    """A record as this candidate saw it, and since when (its monotonic clock) it has not
    changed."""

    record: LeaseRecord
    resource_version: str | None
    since: float


def observe(previous: Observation | None, record: LeaseRecord, resource_version: str | None,
            now: float) -> Observation:
    """The observation after reading ``record``: its clock restarts whenever the Lease was
    written since (its record or its resourceVersion moved)."""
    if previous is not None and previous.record == record \
            and previous.resource_version == resource_version:
        return Observation(record, resource_version, previous.since)
    return Observation(record, resource_version, now)


@dataclass(frozen=True)
class Step:
    action: str
    """create, update or wait."""
    record: LeaseRecord | None = None
    """The record to write (create, update)."""


def micro_time(at: dt.datetime) -> str:
    """A ``MicroTime`` as the API server spells it."""
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def next_step(current: Observation | None, me: str, now: float, wall: dt.datetime,
              lease_duration: float) -> Step:
    """What candidate ``me`` writes next, given what it last read (None: no Lease exists).

    ``now`` is the candidate's monotonic clock, ``wall`` only goes into the record for humans.
    Never raises; takes the Lease only when it is ours, free, or expired as observed here.
    """
    stamp = micro_time(wall)
    seconds = max(1, min(MAX_LEASE_SECONDS, round(lease_duration)))
    if current is None:
        return Step(CREATE, LeaseRecord(me, seconds, stamp, stamp, 0))
    record = current.record
    if record.holder == me:
        return Step(UPDATE, replace(record, duration=seconds, renew_time=stamp))
    held_for = record.duration if record.duration > 0 else seconds
    if record.holder and now - current.since < held_for:
        return Step(WAIT)
    return Step(UPDATE, LeaseRecord(me, seconds, stamp, stamp,
                                    min(2**31 - 1, record.transitions + 1)))


def lease_body(name: str, namespace: str, record: LeaseRecord,
               resource_version: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    spec: dict[str, Any] = {"holderIdentity": record.holder,
                            "leaseDurationSeconds": record.duration,
                            "leaseTransitions": record.transitions}
    if record.acquire_time:
        spec["acquireTime"] = record.acquire_time
    if record.renew_time:
        spec["renewTime"] = record.renew_time
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
            "spec": spec}


class LeaseApi(Protocol):
    """The three Lease requests (``kube.Leases``; a fake in unit tests). ``get`` returns None
    when there is no Lease; ``create`` and ``replace`` return None when another writer won (409).
    Any other failure raises."""

    async def get(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...
    async def create(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None: ...
    async def replace(self, body: Mapping[str, Any]) -> Mapping[str, Any] | None: ...


def _rv(body: Mapping[str, Any] | None) -> str | None:
    meta = body.get("metadata") if isinstance(body, Mapping) else None
    value = meta.get("resourceVersion") if isinstance(meta, Mapping) else None
    return value if isinstance(value, str) else None


class LeaderElector:
    """Takes, renews and releases one Lease; calls ``on_started`` once when this replica starts
    leading and ``on_stopped`` once if it stops leading for any reason but ``release``."""

    def __init__(self, api: LeaseApi, namespace: str, name: str, identity: str, timing: Timing,
                 *, on_started: Callable[[], Awaitable[None]],
                 on_stopped: Callable[[], Awaitable[None]],
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        problems = timing.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self.api, self.namespace, self.name = api, namespace, name
        self.identity = identity[:MAX_IDENTITY]
        self.timing = timing
        self.on_started, self.on_stopped = on_started, on_stopped
        self.clock, self.wall = clock, wall
        self.observed: Observation | None = None
        self.renewed_at: float | None = None
        """When our last write of the Lease succeeded (monotonic); None: not leading."""
        self.lost = False
        self._why = ""
        self._task: asyncio.Task[None] | None = None

    # -- the fence ------------------------------------------------------------------------
    def leading(self) -> bool:
        """True while this replica may act: it holds the Lease, renewed less than the renew
        deadline ago, and has never lost it."""
        return (not self.lost and self.renewed_at is not None
                and self.clock() - self.renewed_at < self.timing.renew_deadline)

    def check(self) -> None:
        """Raise NotLeading unless this replica may act (called before every write)."""
        if not self.leading():
            raise NotLeading(f"{self.identity} does not hold Lease {self.namespace}/{self.name}")

    # -- the loop ----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="leader-election")

    async def stop(self) -> None:
        """Stop the loop and, if still leading, release the Lease."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.release()

    async def run(self) -> None:
        log.info("waiting to lead: Lease %s/%s as %s", self.namespace, self.name, self.identity)
        while True:
            was_leading = self.renewed_at is not None
            try:
                await asyncio.wait_for(self.try_acquire_or_renew(),
                                       timeout=self.timing.retry_period * 2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the API server may be away: try again next period
                log.warning("Lease %s/%s: %s", self.namespace, self.name,
                            getattr(exc, "status", None) or str(exc) or type(exc).__name__)
            if was_leading and not self.leading():
                await self._lose(self._why or "could not renew the Lease within the renew"
                                 " deadline")
                return
            if not was_leading and self.leading():
                log.info("leading: took Lease %s/%s as %s", self.namespace, self.name,
                         self.identity)
                await self.on_started()
            await asyncio.sleep(self.timing.retry_period)

    async def _lose(self, why: str) -> None:
        self.lost = True
        self.renewed_at = None
        log.error("stopped leading (%s): this replica never acts again", why)
        await self.on_stopped()

    async def try_acquire_or_renew(self) -> bool:
        """One round: read the Lease and write it if we may. True if we hold it now.

        A leader that finds the Lease held by another, or whose write meets a conflict (another
        writer came first), stops leading at once rather than at its deadline."""
        if self.lost:
            return False
        if self.leading() and self.observed is not None:
            return await self._renew(self.observed)
        lease = await self.api.get(self.namespace, self.name)
        now = self.clock()
        self.observed = None if lease is None else observe(
            self.observed, record_of(lease), _rv(lease), now)
        step = next_step(self.observed, self.identity, now, self.wall(),
                         self.timing.lease_duration)
        if step.action == WAIT or step.record is None:
            self._stand_down(f"the Lease is held by {self.observed.record.holder!r}"
                             if self.observed else "the Lease is gone")
            return False
        body = lease_body(self.name, self.namespace, step.record,
                          None if step.action == CREATE else
                          (self.observed.resource_version if self.observed else None))
        written = await (self.api.create(body) if step.action == CREATE
                         else self.api.replace(body))
        return self._wrote(written, now)

    async def _renew(self, last: Observation) -> bool:
        """The leader's fast path (client-go's too): write the renewal on top of the version it
        wrote last, without reading first; a conflict means another writer came first."""
        now = self.clock()
        step = next_step(last, self.identity, now, self.wall(), self.timing.lease_duration)
        if step.record is None:
            return False
        written = await self.api.replace(lease_body(self.name, self.namespace, step.record,
                                                    last.resource_version))
        return self._wrote(written, now)

    def _wrote(self, written: Mapping[str, Any] | None, now: float) -> bool:
        """After a Lease write: True and the Lease as written when it went through; when another
        writer came first (a conflict), stand down."""
        if written is None:
            self._stand_down("another replica wrote the Lease first")
            return False
        self.observed = Observation(record_of(written), _rv(written), self.clock())
        self.renewed_at = now
        return True

    def _stand_down(self, why: str) -> None:
        if self.renewed_at is not None:
            self.renewed_at = None
            self._why = why

    async def release(self) -> None:
        """Give the Lease up (holder emptied) so a candidate takes it at once; only if we
        still hold it. Failures are logged: the Lease then simply expires."""
        if not self.leading() or self.observed is None:
            return
        self.renewed_at = None
        record = LeaseRecord("", 1, self.observed.record.acquire_time,
                             micro_time(self.wall()), self.observed.record.transitions)
        try:
            await asyncio.wait_for(self.api.replace(lease_body(
                self.name, self.namespace, record, self.observed.resource_version)),
                timeout=self.timing.retry_period * 2)
            log.info("released Lease %s/%s", self.namespace, self.name)
        except Exception as exc:
            log.warning("could not release Lease %s/%s (it will expire): %s", self.namespace,
                        self.name, getattr(exc, "status", None) or str(exc) or type(exc).__name__)
