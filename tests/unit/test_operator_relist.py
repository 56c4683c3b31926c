"""Objects deleted while a watch listed again (Kopf keeps them in its indexes): the tracker's
bookkeeping, and the controller asking about its suspects and acting on the confirmed ones."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st
from operator_helpers import World

from crontask_operator.relist import KINDS, QUIET_SECONDS, RelistTracker

keys = st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["x", "y", "z", "w"]))
events = st.lists(st.tuples(st.sampled_from(KINDS), keys,
                            st.sampled_from([None, "ADDED", "MODIFIED", "DELETED"])),
                  max_size=40)


def test_a_first_listing_is_no_relist() -> None:
    tracker = RelistTracker()
    assert not any(tracker.event("cronjobs", ("a", n), None, 1.0) for n in "xyz")
    assert tracker.seen is None
    assert tracker.quiet_in(100.0) == 0.0


def test_a_second_listing_names_what_it_did_not_show() -> None:
    tracker = RelistTracker()
    for name in "xyz":
        tracker.event("cronjobs", ("a", name), None, 1.0)
    tracker.event("cronjobs", ("b", "q"), "ADDED", 2.0)
    assert tracker.event("cronjobs", ("a", "x"), None, 10.0)
    assert tracker.quiet_in(10.0) == QUIET_SECONDS
    tracker.event("cronjobs", ("a", "z"), "MODIFIED", 11.0)  # shown since: not a suspect
    assert tracker.quiet_in(10.0 + QUIET_SECONDS) == 0.0
    cached = {"cronjobs": [("a", "x"), ("a", "y"), ("a", "z"), ("b", "q"), ("c", "r")],
              "crontasks": [("a", "x")]}
    # b's and c's CronJobs were not listed again (all deleted, or their watch has not listed
    # yet): suspects too; the CronTasks' watch did not list again: none of them
    assert tracker.suspects(cached) == {"cronjobs": [("a", "y"), ("b", "q"), ("c", "r")],
                                        "crontasks": []}
    assert tracker.seen is None, "the re-list is over"


@given(events, events, st.lists(keys, max_size=12))
def test_suspects_are_only_unseen_keys_of_relisted_namespaces(
        before: list[tuple[str, tuple[str, str], str | None]],
        during: list[tuple[str, tuple[str, str], str | None]],
        cached: list[tuple[str, str]]) -> None:
    """Invariants: a suspect is cached, of a kind a listing showed again, and no event showed
    it since the re-list began; ending a re-list twice finds nothing the second time;
    the tracker never raises."""
    tracker = RelistTracker()
    for t, (kind, key, type_) in enumerate(before):
        tracker.event(kind, key, type_, float(t))
    started = tracker.seen is not None
    shown: set[tuple[str, tuple[str, str]]] = set()
    for t, (kind, key, type_) in enumerate(during, start=len(before)):
        started = tracker.event(kind, key, type_, float(t)) or started
        if tracker.seen is not None and type_ != "DELETED":
            shown.add((kind, key))
    relisted = set(tracker.kinds)
    out = tracker.suspects({kind: list(cached) for kind in KINDS})
    for kind, suspects in out.items():
        for key in suspects:
            assert key in cached and kind in relisted and (kind, key) not in shown
    if not started:
        assert out == {kind: [] for kind in KINDS}
    assert tracker.suspects({kind: list(cached) for kind in KINDS}) == {k: [] for k in KINDS}


def _world_with(*names: str) -> World:
    world = World()
    for name in names:
        world.add_crontask(name)
        world.reconcile(name)
    assert all(world.cronjob(n) is not None for n in names)
    return world


def test_a_cronjob_deleted_during_a_relist_is_created_again() -> None:
    world = _world_with("p1", "p2")
    ctl = world.controller
    world.delete_unseen("CronJob", "p1")
    world.relist()
    world.calls.clear()
    gone = asyncio.run(ctl.check_relisted())
    assert gone == [("cronjobs", ("ns", "p1"))]
    assert world.calls == [("find", "cronjobs/p1")], "only the suspect is asked about"
    assert ("ns", "p1") in ctl.queue._queue
    assert world.reconcile("p1") == "ok"
    assert world.cronjob("p1") is not None
    assert ("apply", "p1") in world.calls


def test_a_crontask_deleted_during_a_relist_is_forgotten() -> None:
    world = _world_with("p1", "p2")
    ctl = world.controller
    world.delete_unseen("CronTask", "p1")
    world.delete_unseen("CronJob", "p1")  # its CronJob went with it (garbage collection)
    world.relist()
    gone = asyncio.run(ctl.check_relisted())
    assert sorted(gone) == [("cronjobs", ("ns", "p1")), ("crontasks", ("ns", "p1"))]
    world.calls.clear()
    assert world.reconcile("p1") == "gone"
    assert world.writes() == [], "nothing is written for a CronTask that is gone"
    ctl.enqueue(("ns", "p1"), "resync")  # whatever queues it again later
    assert world.reconcile("p1") == "gone"
    assert world.writes() == []


def test_a_crontask_created_again_under_its_name_is_reconciled() -> None:
    world = _world_with("p1", "p2")
    world.delete_unseen("CronTask", "p1")
    world.delete_unseen("CronJob", "p1")
    world.relist()
    asyncio.run(world.controller.check_relisted())
    world.add_crontask("p1")  # a new object: another resourceVersion, an event
    assert world.reconcile("p1") == "ok"
    assert world.cronjob("p1") is not None


def test_a_namespace_emptied_during_a_relist() -> None:
    """Every CronTask and CronJob of a namespace deleted: nothing of it is listed again, yet
    its CronJobs are suspects, as the CronJobs' watch listed again (another namespace's). Its
    CronTasks are not: no CronTask at all was listed again here (the limit: a kind whose every
    object went, which the operator's next start clears)."""
    world = _world_with("p1", "p2")
    world.objects[("CronJob", "other", "q")] = {"metadata": {
        "name": "q", "namespace": "other", "resourceVersion": "1",
        "labels": {"crontask.dev/crontask": "q"}}}
    world.deliver()
    for name in ("p1", "p2"):
        world.delete_unseen("CronTask", name)
        world.delete_unseen("CronJob", name)
    world.relist()
    gone = asyncio.run(world.controller.check_relisted())
    assert sorted(gone) == [("cronjobs", ("ns", "p1")), ("cronjobs", ("ns", "p2"))]


def test_a_relist_that_missed_nothing_asks_nothing() -> None:
    world = _world_with("p1", "p2")
    world.relist()
    world.calls.clear()
    assert asyncio.run(world.controller.check_relisted()) == []
    assert world.calls == []
