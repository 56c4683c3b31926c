"""How one decay run splits its users between connections: pure, so it can be tested alone.

decay walks each chapter along the keyset `(last_interaction_at, id)`. With more than one
connection, each chapter's keyset is cut into ranges at keys taken from a sample of the table,
and the connections take the ranges in order, one at a time, from a shared queue. A range is
`after < key <= until`, so the ranges of a chapter are disjoint and together cover every key,
whatever the sample held: a poor sample makes the ranges uneven, never loses or repeats a user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from typing import Final
from uuid import UUID

Key = tuple[datetime | str, UUID | str]
"""A keyset position: (last_interaction_at, id), or one of the two sentinels below."""

FIRST_KEY: Final[Key] = ("-infinity", "00000000-0000-0000-0000-000000000000")
"""Before every user (an exclusive lower bound)."""
LAST_KEY: Final[Key] = ("infinity", "ffffffff-ffff-ffff-ffff-ffffffffffff")
"""After every user decay can charge (an inclusive upper bound: a user last seen at
`infinity` is never past its grace)."""

RANGES_PER_WORKER: Final = 8
"""Enough ranges that the connections finish close together: the last range to end is about
1/8 of a connection's share, so the run waits at most that long on one connection alone."""


@dataclass(frozen=True)
class KeyRange:
    """The users of one chapter with `after < (last_interaction_at, id) <= until`."""

    chapter: int
    after: Key
    until: Key


def whole_chapters(chapters: Sequence[int]) -> list[KeyRange]:
    """One range per chapter: the single-connection walk."""
    return [KeyRange(c, FIRST_KEY, LAST_KEY) for c in sorted(set(chapters))]


def split_ranges(chapters: Sequence[int], sample: Mapping[int, Sequence[tuple[datetime, UUID]]],
                 fraction: float, workers: int, chunk_size: int) -> list[KeyRange]:
    """Each chapter cut at keys of its `sample` (a `fraction` of its users, 0 < f <= 1) into
    ranges of about an equal number of users, in chapter and key order.

    A range holds at least two chunks' worth (so the extra partial chunk at each range's end
    stays a small cost), and the run has about `RANGES_PER_WORKER` per worker. A chapter
    with no sample is one range. Keys of the sample outside `chapters` are ignored.
    """
    if workers < 1 or chunk_size < 1 or not 0 < fraction <= 1:
        raise ValueError("workers and chunk_size must be positive and 0 < fraction <= 1")
    keys = {c: sorted(set(sample.get(c, ()))) for c in set(chapters)}
    estimated = {c: len(k) / fraction for c, k in keys.items()}
    target = max(2.0 * chunk_size, sum(estimated.values()) / (workers * RANGES_PER_WORKER))
    out: list[KeyRange] = []
    for chapter in sorted(keys):
        ks = keys[chapter]
        pieces = max(1, min(round(estimated[chapter] / target), len(ks)))
        cuts: list[Key] = [ks[(j * len(ks)) // pieces] for j in range(1, pieces)]
        bounds = [FIRST_KEY, *cuts, LAST_KEY]
        out += [KeyRange(chapter, lo, hi) for lo, hi in pairwise(bounds)]
    return out
