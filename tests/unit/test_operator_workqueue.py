"""The work queue: one pending entry per key, never two workers on a key, delays and backoff."""

from __future__ import annotations

import asyncio

import pytest

from crontask_operator.workqueue import ShutDown, WorkQueue


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_adds_is_one_entry() -> None:
    async def go() -> None:
        q: WorkQueue[str] = WorkQueue()
        assert q.add("a")
        assert not q.add("a")
        q.add("b")
        assert len(q) == 2
        assert (await q.get())[0] == "a"
        assert (await q.get())[0] == "b"
    asyncio.run(go())


def test_a_key_added_while_processed_comes_back_once_after() -> None:
    async def go() -> None:
        q: WorkQueue[str] = WorkQueue()
        q.add("a")
        key, _ = await q.get()
        q.add("a")
        q.add("a")
        assert len(q) == 0, "never handed to a second worker while processed"
        q.done(key)
        assert len(q) == 1
        assert (await q.get())[0] == "a"
        q.done("a")
        assert len(q) == 0
    asyncio.run(go())


def test_delays_keep_the_earliest_time() -> None:
    async def go() -> None:
        clock = Clock()
        q: WorkQueue[str] = WorkQueue(clock=clock)
        assert q.add_after("a", 10)
        assert not q.add_after("a", 20)
        assert q.add_after("a", 5)
        clock.now = 4.9
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.05)
        clock.now = 5.0
        assert (await asyncio.wait_for(q.get(), 1))[0] == "a"
        q.done("a")
        clock.now = 100
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.05)
    asyncio.run(go())


def test_backoff_doubles_until_forgotten() -> None:
    async def go() -> None:
        q: WorkQueue[str] = WorkQueue(base_delay=1, max_delay=8)
        assert [q.backoff("a") for _ in range(5)] == [1, 2, 4, 8, 8]
        q.forget("a")
        assert q.backoff("a") == 1
    asyncio.run(go())


def test_discard_drops_pending_delays() -> None:
    async def go() -> None:
        clock = Clock()
        q: WorkQueue[str] = WorkQueue(clock=clock)
        q.add_after("a", 1)
        q.discard("a")
        clock.now = 10
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(q.get(), 0.05)
    asyncio.run(go())


def test_shutdown_ends_waiting_workers() -> None:
    async def go() -> None:
        q: WorkQueue[str] = WorkQueue()
        waiter = asyncio.create_task(q.get())
        await asyncio.sleep(0)
        q.shutdown()
        with pytest.raises(ShutDown):
            await waiter
    asyncio.run(go())
