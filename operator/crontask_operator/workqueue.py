"""A work queue of keys in the shape of client-go's (workqueue.RateLimitingInterface).

Events only add keys; workers take them one at a time. A key is in the queue at most once, and
never processed by two workers at once: added while it is being processed, it is processed again
afterwards (so no change is lost, and a burst of events costs one reconcile). Keys can be added
after a delay (the safety resync, waiting for a pod's report) and after a per-key exponential
backoff (a failed reconcile). One asyncio event loop, no threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class ShutDown(Exception):
    """The queue was shut down; workers end."""


class WorkQueue(Generic[K]):
    def __init__(self, *, base_delay: float = 0.5, max_delay: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._queue: deque[K] = deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._added_at: dict[K, float] = {}
        self._delayed: list[tuple[float, int, K]] = []
        self._due: dict[K, float] = {}
        self._seq = itertools.count()
        self._failures: dict[K, int] = {}
        self._wake = asyncio.Event()
        self._shut = False
        self._clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def delayed(self) -> int:
        return len(self._due)

    def add(self, key: K) -> bool:
        """Queue ``key`` now; False if it was already waiting (the add was merged)."""
        if self._shut or key in self._dirty:
            return False
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock())
        if key not in self._processing:
            self._queue.append(key)
            self._wake.set()
        return True

    def add_after(self, key: K, delay: float) -> bool:
        """Queue ``key`` after ``delay`` seconds; an earlier pending time for it wins.
        True when this call set the time."""
        if self._shut:
            return False
        if delay <= 0:
            self.add(key)
            return True
        when = self._clock() + delay
        if key in self._due and self._due[key] <= when:
            return False
        self._due[key] = when
        heapq.heappush(self._delayed, (when, next(self._seq), key))
        self._wake.set()
        return True

    def backoff(self, key: K) -> float:
        """The next delay for a failing ``key`` (doubling per failure, capped); counts it."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        return float(min(self.max_delay, self.base_delay * 2**min(failures, 30)))

    def add_rate_limited(self, key: K) -> float:
        """Queue ``key`` after its backoff; returns the delay."""
        delay = self.backoff(key)
        self.add_after(key, delay)
        return delay

    def forget(self, key: K) -> None:
        """``key`` succeeded: its next failure starts the backoff afresh."""
        self._failures.pop(key, None)

    def discard(self, key: K) -> None:
        """Stop tracking ``key`` (the object is gone): no delayed add, no backoff."""
        self._due.pop(key, None)
        self._failures.pop(key, None)

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def _promote_due(self) -> float | None:
        """Move due delayed keys into the queue; seconds until the next one, if any."""
        now = self._clock()
        while self._delayed:
            when, _, key = self._delayed[0]
            if self._due.get(key) != when:
                heapq.heappop(self._delayed)  # superseded by an earlier time, or discarded
                continue
            if when > now:
                return when - now
            heapq.heappop(self._delayed)
            del self._due[key]
            self.add(key)
        return None

    async def get(self) -> tuple[K, float]:
        """The next key and how long it waited in the queue; ShutDown once shut down."""
        while True:
            if self._shut:
                raise ShutDown
            timeout = self._promote_due()
            if self._queue:
                key = self._queue.popleft()
                self._dirty.discard(key)
                self._processing.add(key)
                waited = self._clock() - self._added_at.pop(key, self._clock())
                return key, max(0.0, waited)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def done(self, key: K) -> None:
        """Processing of ``key`` ended; if it was added meanwhile, it is queued again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake.set()

    def shutdown(self) -> None:
        self._shut = True
        self._wake.set()
