"""The start ramp of a process run's pipeline slots (pure asyncio, no database).

Invariants: every slot gets its turn (a slot that never starts holds the others back by at
most the ramp's wait, never forever); no more than `width` slots are starting at once while
every slot reports in; slot i starts only after slot i - width is under way, unless that one
never came.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crontask_jobs.pipeline.ramp import WIDTH, StartRamp

DEADLOCK_GUARD_S = 10.0
"""Far beyond any ramp below: reaching it means a slot never got its turn."""


async def ramp_up(slots: int, width: int, starts_in_s: list[float], never: set[int],
                  max_wait_s: float = 0.5) -> tuple[list[str], int]:
    """Run `slots` slots through a ramp; each is `starting` for its delay, then `started`
    (the slots in `never` never report in, as a slot stuck connecting would not). Returns the
    order of events and the most slots starting at once."""
    ramp = StartRamp(slots, width, max_wait_s)
    events: list[str] = []
    starting = [0, 0]
    turned = [asyncio.Event() for _ in range(slots)]

    async def slot(i: int) -> None:
        await ramp.turn(i)
        events.append(f"turn {i}")
        turned[i].set()
        starting[0] += 1
        starting[1] = max(starting)
        try:
            if i in never:
                await asyncio.sleep(DEADLOCK_GUARD_S * 2)
                return
            await asyncio.sleep(starts_in_s[i])
        finally:
            starting[0] -= 1
        events.append(f"started {i}")
        ramp.started(i)

    tasks = [asyncio.ensure_future(slot(i)) for i in range(slots)]
    try:
        # every slot that reports in, and the turn of every slot that never does (which may
        # come after all the others are done)
        await asyncio.wait_for(asyncio.gather(
            *(t for i, t in enumerate(tasks) if i not in never),
            *(turned[i].wait() for i in never)), DEADLOCK_GUARD_S)
        turns = [e for e in events if e.startswith("turn")]
        assert len(turns) == slots, f"slots never got their turn: {events}"
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return events, starting[1]


def test_at_most_width_slots_start_at_once_and_in_turn() -> None:
    events, most = asyncio.run(ramp_up(12, 3, [0.002] * 12, set()))
    assert most == 3
    for i in range(3, 12):
        assert events.index(f"turn {i}") > events.index(f"started {i - 3}")


def test_the_first_width_slots_start_at_once() -> None:
    events, most = asyncio.run(ramp_up(WIDTH, WIDTH, [0.001] * WIDTH, set()))
    assert most == WIDTH
    assert events[:WIDTH] == [f"turn {i}" for i in range(WIDTH)]


def test_a_slot_that_never_starts_holds_the_next_back_only_for_the_wait() -> None:
    events, _ = asyncio.run(ramp_up(6, 2, [0.001] * 6, never={1}, max_wait_s=0.05))
    assert "started 1" not in events
    assert {f"turn {i}" for i in range(6)} <= set(events)
    # slot 3 waited for slot 1 until the wait ran out, then started; its chain goes on
    assert events.index("turn 5") > events.index("started 3")


def test_the_ramp_is_done_once_every_slot_is_under_way_or_gave_up() -> None:
    """`done_at` (where a run's ramp phase ends) is set by the last slot to report, once, and
    a slot reporting twice (its first claim, then its stop) does not count twice."""
    async def main() -> None:
        ramp = StartRamp(3, width=1)
        ramp.started(0)
        ramp.started(0)
        ramp.started(2)  # gave up before its turn
        assert ramp.done_at is None
        before = time.monotonic()
        ramp.started(1)
        done = ramp.done_at
        assert done is not None and before <= done <= time.monotonic()
        ramp.started(1)
        assert ramp.done_at == done
    asyncio.run(main())


def test_a_slot_that_stopped_before_its_first_claim_lets_the_next_go_at_once() -> None:
    async def main() -> None:
        ramp = StartRamp(2, width=1, max_wait_s=DEADLOCK_GUARD_S)
        ramp.started(0)  # gave up (say, its connection failed): reported from `finally`
        ramp.started(0)  # and reported again: idempotent
        # slot 0 never called turn(); had slot 1 waited for it, or for the ramp's wait,
        # this would raise TimeoutError
        await asyncio.wait_for(ramp.turn(1), DEADLOCK_GUARD_S / 10)
    asyncio.run(main())


@pytest.mark.parametrize("width", [0, -1])
def test_a_ramp_without_width_is_refused(width: int) -> None:
    with pytest.raises(ValueError, match="width"):
        StartRamp(3, width)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_every_slot_gets_its_turn_and_never_before_its_predecessor(data: st.DataObject) -> None:
    slots = data.draw(st.integers(1, 24), label="slots")
    width = data.draw(st.integers(1, 6), label="width")
    delays = data.draw(st.lists(st.sampled_from([0.0, 0.0005, 0.001, 0.003]),
                                min_size=slots, max_size=slots), label="delays")
    never = data.draw(st.sets(st.integers(0, slots - 1), max_size=3), label="never")
    events, most = asyncio.run(ramp_up(slots, width, delays, never, max_wait_s=0.1))
    assert most <= width + len(never)  # each slot that never came lets one more in
    for i in range(width, slots):
        if i - width not in never:
            assert events.index(f"turn {i}") > events.index(f"started {i - width}")
