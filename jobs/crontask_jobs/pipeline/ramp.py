"""Starting a run's pipeline slots a few at a time, so that they do not stay in step.

Slots whose stages take about as long keep the phase they start with. Started together, every
slot's round trips reach the server and the event loop in one burst, and each cycle waits for
the burst to drain: at concurrency 50 in the benchmark, a round trip that takes 0.1 ms alone
took 4 ms on average and up to 63 ms, and the run reached 71-81% of its ideal. Started a
round trip apart, the slots interleave: 1.6 ms on average, 7 ms at most, and 79-86% of the
ideal (BENCHMARKS.md). The server is also spared a storm of claims at the start of every
run (the slots' connections are set up before, a few at a time: tasks/process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Final

WIDTH: Final = 4
"""Slots whose start (their first claim) may be under way at once; slot i starts once slot
i - WIDTH is under way. 1, 2, 4, 8 and 16 measured alike; 4 is the least held back by one
slow slot."""
MAX_WAIT_S: Final = 0.25
"""The longest a slot waits for the one before it, from that one's turn: a slot slow to connect
or claim holds the slots behind it back by this much, never more (a first claim took 63 ms at
most in the benchmark, under load)."""


class StartRamp:
    """Who may start: `turn(i)` returns once slot i may start, `started(i)` says slot i is under
    way (its first claim came back) or gave up. One event loop: no locks needed."""

    def __init__(self, slots: int, width: int = WIDTH, max_wait_s: float = MAX_WAIT_S) -> None:
        if width < 1:
            raise ValueError(f"width must be at least 1, not {width}")
        self._turned = [asyncio.Event() for _ in range(slots)]
        self._started = [asyncio.Event() for _ in range(slots)]
        self._width = width
        self._max_wait_s = max_wait_s
        self._left = slots
        self.done_at: float | None = None
        """When the last slot got under way or gave up (`time.monotonic()`), or None: the
        ramp's cost is paid once per run (see `phases_ms`)."""

    async def turn(self, slot: int) -> None:
        """The wait for the slot before runs from that slot's own turn, so that one slot
        stuck early costs the slots behind it one wait, not all of them theirs at once."""
        if slot >= self._width:
            before = slot - self._width
            await self._turned[before].wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._started[before].wait(), self._max_wait_s)
        self._turned[slot].set()

    def started(self, slot: int) -> None:
        """Idempotent: called after the first claim and again whenever the slot stops (even
        before its turn came)."""
        self._turned[slot].set()
        if not self._started[slot].is_set():
            self._started[slot].set()
            self._left -= 1
            if self._left == 0:
                self.done_at = time.monotonic()
