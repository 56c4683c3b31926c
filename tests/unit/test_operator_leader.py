"""Leader election on a Lease (issue 10.5): at most one replica acts at any instant, a standby
takes over once the leader stops renewing, a released Lease is taken at once, a leader that lost
its Lease never acts again, and nothing a Lease object holds makes the election raise.

The Lease API here is an in-memory stand-in with the API server's optimistic concurrency (a
write carrying an old resourceVersion is a conflict); the cluster tier's chaos tests run the
same code against a real API server, with real pods killed and frozen.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crontask_operator import leader
from crontask_operator.leader import (
    CREATE,
    UPDATE,
    WAIT,
    LeaderElector,
    LeaseRecord,
    NotLeading,
    Observation,
    Timing,
    next_step,
    record_of,
)

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
WALL = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Leases:
    """One namespace's Leases with resourceVersion preconditions, like the API server's."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0
        self.fail: Exception | None = None
        self.writes: list[str] = []

    def _stamp(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(dict(body))
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj
        self.writes.append(obj["spec"]["holderIdentity"])
        return copy.deepcopy(obj)

    async def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        if self.fail:
            raise self.fail
        obj = self.objects.get((namespace, name))
        return copy.deepcopy(obj) if obj else None

    async def create(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.fail:
            raise self.fail
        if (body["metadata"]["namespace"], body["metadata"]["name"]) in self.objects:
            return None
        return self._stamp(body)

    async def replace(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        if self.fail:
            raise self.fail
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        current = self.objects.get(key)
        if current is None or body["metadata"].get("resourceVersion") != \
                current["metadata"]["resourceVersion"]:
            return None
        return self._stamp(body)

    def holder(self) -> str:
        return str(self.objects[("ns", "lease")]["spec"]["holderIdentity"])


class Replica:
    """An elector and what its callbacks saw."""

    def __init__(self, name: str, api: Leases, clock: Clock) -> None:
        self.started = 0
        self.stopped = 0

        async def started() -> None:
            self.started += 1

        async def stopped() -> None:
            self.stopped += 1
        self.elector = LeaderElector(api, "ns", "lease", name, TIMING, on_started=started,
                                     on_stopped=stopped, clock=clock, wall=lambda: WALL)

    def round(self) -> bool:
        return asyncio.run(self.elector.try_acquire_or_renew())


def world(*names: str) -> tuple[Leases, Clock, list[Replica]]:
    api, clock = Leases(), Clock()
    return api, clock, [Replica(n, api, clock) for n in names]


def test_the_first_candidate_creates_the_lease_and_the_second_waits() -> None:
    api, clock, (a, b) = world("a", "b")
    assert a.round() and a.elector.leading()
    assert api.holder() == "a"
    clock.now += 2
    assert not b.round() and not b.elector.leading()
    for _ in range(20):  # a keeps renewing: b never gets it, however long it tries
        clock.now += 2
        assert a.round()
        assert not b.round()
    assert api.holder() == "a"
    assert api.objects[("ns", "lease")]["spec"]["leaseTransitions"] == 0


def test_a_standby_takes_over_a_lease_duration_after_the_last_renewal_it_saw() -> None:
    api, clock, (a, b) = world("a", "b")
    a.round()
    clock.now += 1
    b.round()  # b sees a's record at t=1
    clock.now += 14
    assert not b.round(), "14 s after b first saw it: a may still be alive"
    clock.now += 1
    assert b.round() and b.elector.leading()
    assert api.holder() == "b"
    assert api.objects[("ns", "lease")]["spec"]["leaseTransitions"] == 1
    assert not a.elector.leading(), "a's right lapsed 10 s after its last renewal"
    with pytest.raises(NotLeading):
        a.elector.check()


def test_a_frozen_leader_stops_acting_before_anyone_may_take_over() -> None:
    """SIGSTOP for longer than the lease: a's own clock ends its right at the renew deadline,
    5 s before b may take the Lease; thawed, it finds b's record and never acts again."""
    api, clock, (a, b) = world("a", "b")
    a.round()
    b.round()
    clock.now += 9.9
    assert a.elector.leading()
    clock.now += 0.1
    assert not a.elector.leading(), "10 s without a renewal: a must not write"
    assert not b.round(), "yet b may not take over for 5 more seconds"
    clock.now += 5
    assert b.round()
    assert not a.round(), "thawed, a sees b's Lease"
    assert not a.elector.leading() and a.elector.renewed_at is None
    assert api.holder() == "b"


def test_a_lapsed_leader_whose_lease_nobody_touched_renews_it() -> None:
    """Nobody wrote the Lease while a was frozen (its resourceVersion is a's): nobody acted, so
    a may go on (a conflict would have told it otherwise)."""
    api, clock, (a,) = world("a")
    a.round()
    clock.now += 30
    assert not a.elector.leading()
    assert a.round() and a.elector.leading()
    assert api.writes == ["a", "a"]


def test_a_released_lease_is_taken_at_once() -> None:
    api, clock, (a, b) = world("a", "b")
    a.round()
    b.round()
    asyncio.run(a.elector.release())
    assert api.holder() == ""
    assert not a.elector.leading()
    clock.now += 2
    assert b.round(), "no waiting for a released Lease"


def test_a_conflicting_write_ends_leadership_at_once() -> None:
    api, clock, (a,) = world("a")
    a.round()
    lease = api.objects[("ns", "lease")]
    api._stamp({**lease, "spec": {**lease["spec"], "holderIdentity": "intruder"}})
    clock.now += 2
    assert not a.round()
    assert not a.elector.leading()


def test_the_api_away_ends_leadership_at_the_renew_deadline() -> None:
    api, clock, (a,) = world("a")
    a.round()
    api.fail = OSError("connection refused")
    for _ in range(4):
        clock.now += 2
        with pytest.raises(OSError):
            a.round()
        assert a.elector.leading()
    clock.now += 2
    assert not a.elector.leading()


def test_the_loop_calls_started_once_and_stopped_once_when_the_lease_is_lost() -> None:
    """run(): leading starts the controller once; losing the Lease stops it once and ends the
    loop, and the replica never leads again (the process exits)."""
    api = Leases()
    fast = Timing(lease_duration=0.3, renew_deadline=0.2, retry_period=0.02)
    events: list[str] = []

    async def started() -> None:
        events.append("started")

    async def stopped() -> None:
        events.append("stopped")

    async def go() -> None:
        elector = LeaderElector(api, "ns", "lease", "a", fast, on_started=started,
                                on_stopped=stopped)
        task = asyncio.create_task(elector.run())
        for _ in range(500):
            await asyncio.sleep(0.01)
            if events:
                break
        lease = api.objects[("ns", "lease")]
        api._stamp({**lease, "spec": {**lease["spec"], "holderIdentity": "intruder"}})
        await asyncio.wait_for(task, timeout=10)
        assert elector.lost and not elector.leading()
        assert not await elector.try_acquire_or_renew()
    asyncio.run(go())
    assert events == ["started", "stopped"]


def test_stop_releases_only_a_held_lease() -> None:
    api, _clock, (a, b) = world("a", "b")
    a.round()
    b.round()
    asyncio.run(b.elector.stop())
    assert api.holder() == "a", "a standby's stop leaves the leader's Lease alone"
    asyncio.run(a.elector.stop())
    assert api.holder() == ""


def test_timings_that_cannot_keep_one_leader_are_refused() -> None:
    for timing in (Timing(15, 15, 2), Timing(15, 10, 10), Timing(10, 15, 2), Timing(15, 10, 0)):
        assert timing.problems()
        with pytest.raises(ValueError):
            LeaderElector(Leases(), "ns", "l", "a", timing, on_started=_noop, on_stopped=_noop)
    assert TIMING.problems() == []


async def _noop() -> None:
    return None


# -- properties --------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=20), children, max_size=6), max_leaves=20)
lease_specs = st.fixed_dictionaries({}, optional={
    "holderIdentity": json_values | st.text(max_size=400),
    "leaseDurationSeconds": json_values | st.integers(-10**20, 10**20),
    "acquireTime": json_values, "renewTime": json_values,
    "leaseTransitions": json_values | st.integers(-10**20, 10**20)})


@given(st.one_of(json_values, st.fixed_dictionaries({"spec": lease_specs})))
def test_any_lease_object_reads_as_a_bounded_record(lease: Any) -> None:
    record = record_of(lease)
    assert isinstance(record.holder, str) and len(record.holder) <= leader.MAX_IDENTITY
    assert 0 <= record.duration <= leader.MAX_LEASE_SECONDS
    assert 0 <= record.transitions < 2**31
    assert record_of(leader.lease_body("l", "ns", record)) == record, "round trip"


records = st.builds(LeaseRecord, holder=st.sampled_from(["", "me", "other", "third"]),
                    duration=st.integers(0, leader.MAX_LEASE_SECONDS),
                    transitions=st.integers(0, 2**31 - 1))


@given(st.none() | st.builds(Observation, records, st.none() | st.text(max_size=5),
                             st.floats(0, 1e6)),
       st.floats(0, 2e6), st.floats(0.001, 1e5))
def test_a_candidate_never_takes_a_lease_another_holds_and_renewed_recently(
        current: Observation | None, now: float, duration: float) -> None:
    step = next_step(current, "me", now, WALL, duration)
    assert step.action in (CREATE, UPDATE, WAIT)
    if current is None:
        assert step.action == CREATE and step.record is not None
        assert step.record.holder == "me"
        return
    record = current.record
    held_for = record.duration if record.duration > 0 else max(1, round(duration))
    if record.holder not in ("", "me") and now - current.since < held_for:
        assert step.action == WAIT
    else:
        assert step.action == UPDATE and step.record is not None
        assert step.record.holder == "me"
        took_over = record.holder != "me"
        assert step.record.transitions == min(2**31 - 1, record.transitions + took_over)


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "tick", "freeze-a", "release"]),
                          st.floats(0, 20)), max_size=60))
def test_never_two_leaders_at_once(script: list[tuple[str, float]]) -> None:
    """Any interleaving of rounds, clock advances, freezes (a replica skipping its rounds) and
    releases: at every instant at most one replica may act."""
    _api, clock, replicas = world("a", "b", "c")
    by_name = {r.elector.identity: r for r in replicas}
    frozen = False
    for action, seconds in script:
        if action == "tick":
            clock.now += seconds
        elif action == "freeze-a":
            frozen = not frozen
        elif action == "release":
            for replica in replicas:
                asyncio.run(replica.elector.release())
        elif not (frozen and action == "a"):
            by_name[action].round()
        assert sum(r.elector.leading() for r in replicas) <= 1, (action, clock.now)
