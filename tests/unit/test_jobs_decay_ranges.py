"""How decay splits its users between connections (tests/db/test_decay.py runs the split).

Invariants, for any sample: the ranges of each chapter are contiguous from before the first
user to after the last, so every key falls in exactly one range (nothing lost, nothing twice);
the output does not depend on the sample's order or repeats; the number of ranges is bounded
by the workers, not by the table; bad arguments are refused, not half-used.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crontask_jobs.decay_ranges import (
    FIRST_KEY,
    LAST_KEY,
    RANGES_PER_WORKER,
    Key,
    KeyRange,
    split_ranges,
    whole_chapters,
)

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
CHAPTERS = st.lists(st.integers(1, 5), min_size=1, max_size=5)
KEYS = st.tuples(st.integers(0, 50).map(lambda h: EPOCH + timedelta(hours=h)),
                 st.integers(0, 2**128 - 1).map(lambda n: UUID(int=n)))
SAMPLES = st.dictionaries(st.integers(1, 6), st.lists(KEYS, max_size=60), max_size=6)
FRACTIONS = st.floats(min_value=1e-6, max_value=1.0, exclude_min=True)


def inside(key: tuple[datetime, UUID], r: KeyRange) -> bool:
    above = r.after == FIRST_KEY or key > r.after
    below = r.until == LAST_KEY or key <= r.until
    return above and below


def of(ranges: Sequence[KeyRange], chapter: int) -> list[KeyRange]:
    return [r for r in ranges if r.chapter == chapter]


def split(chapters: Sequence[int], sample: Mapping[int, Sequence[tuple[datetime, UUID]]],
          fraction: float = 0.01, workers: int = 2, chunk: int = 10) -> list[KeyRange]:
    return split_ranges(chapters, sample, fraction, workers, chunk)


@given(CHAPTERS, SAMPLES, FRACTIONS, st.integers(1, 16), st.integers(1, 10_000))
def test_each_chapter_is_covered_once_in_order(chapters: list[int], sample: dict[int, list[
        tuple[datetime, UUID]]], fraction: float, workers: int, chunk: int) -> None:
    ranges = split_ranges(chapters, sample, fraction, workers, chunk)
    assert [r.chapter for r in ranges] == sorted(r.chapter for r in ranges)
    assert {r.chapter for r in ranges} == set(chapters)
    for chapter in set(chapters):
        mine = of(ranges, chapter)
        assert mine[0].after == FIRST_KEY and mine[-1].until == LAST_KEY
        for lower, upper in pairwise(mine):
            assert lower.until == upper.after  # contiguous: no gap, no overlap
            assert upper.after not in (FIRST_KEY, LAST_KEY)
        cuts: list[Key] = [r.after for r in mine[1:]]
        assert cuts == sorted(cuts) and len(set(cuts)) == len(cuts)
        for key in sample.get(chapter, []):
            assert sum(inside(key, r) for r in mine) == 1, key


@given(CHAPTERS, SAMPLES, FRACTIONS, st.integers(1, 16), st.integers(1, 10_000),
       st.randoms(use_true_random=False))
def test_the_sample_order_and_repeats_do_not_matter(
        chapters: list[int], sample: dict[int, list[tuple[datetime, UUID]]], fraction: float,
        workers: int, chunk: int, rnd: random.Random) -> None:
    first = split_ranges(chapters, sample, fraction, workers, chunk)
    shuffled = {c: rnd.sample(ks + ks[:3], len(ks + ks[:3])) for c, ks in sample.items()}
    assert split_ranges(chapters, shuffled, fraction, workers, chunk) == first
    assert split_ranges(list(reversed(chapters)) * 2, sample, fraction, workers, chunk) == first


@given(CHAPTERS, SAMPLES, FRACTIONS, st.integers(1, 16), st.integers(1, 10_000))
def test_the_number_of_ranges_is_bounded_by_the_workers(
        chapters: list[int], sample: dict[int, list[tuple[datetime, UUID]]], fraction: float,
        workers: int, chunk: int) -> None:
    ranges = split_ranges(chapters, sample, fraction, workers, chunk)
    assert len(ranges) <= workers * RANGES_PER_WORKER + len(set(chapters))
    for chapter in set(chapters):  # never more cuts than sampled keys
        assert len(of(ranges, chapter)) <= max(1, len(set(sample.get(chapter, []))))


def test_a_large_chapter_is_cut_into_about_equal_ranges() -> None:
    keys = [(EPOCH + timedelta(seconds=i), UUID(int=i)) for i in range(4000)]
    # 4,000 sampled of 1,000,000 users in one chapter, two workers, chunks of 5,000.
    ranges = split([1], {1: keys}, fraction=0.004, workers=2, chunk=10_000 // 2)
    assert len(ranges) == 2 * RANGES_PER_WORKER
    sizes = [sum(inside(k, r) for k in keys) for r in ranges]
    assert max(sizes) - min(sizes) <= 2  # a cut key ends the range before it


def test_small_chapters_are_not_cut_below_two_chunks() -> None:
    keys = [(EPOCH + timedelta(seconds=i), UUID(int=i)) for i in range(100)]
    # 100 sampled of 20,000 users, 8 workers: 2 ranges of 2 chunks each, not 64 of 312.
    ranges = split([1], {1: keys}, fraction=0.005, workers=8, chunk=5000)
    assert len(ranges) == 2
    assert len(split([1], {1: keys}, fraction=0.005, workers=8, chunk=20_000)) == 1


def test_a_chapter_without_a_sample_is_one_range_and_strangers_are_ignored() -> None:
    keys = [(EPOCH + timedelta(seconds=i), UUID(int=i)) for i in range(50)]
    ranges = split([1, 2], {2: keys, 9: keys}, fraction=0.001, workers=2, chunk=10)
    assert of(ranges, 1) == [KeyRange(1, FIRST_KEY, LAST_KEY)]
    assert len(of(ranges, 2)) > 1 and not of(ranges, 9)


def test_whole_chapters_is_one_range_each() -> None:
    assert whole_chapters([3, 1, 3]) == [KeyRange(1, FIRST_KEY, LAST_KEY),
                                         KeyRange(3, FIRST_KEY, LAST_KEY)]


@pytest.mark.parametrize(("fraction", "workers", "chunk"),
                         [(0.0, 2, 10), (1.5, 2, 10), (float("nan"), 2, 10), (0.1, 0, 10),
                          (0.1, 2, 0)])
def test_bad_arguments_are_refused(fraction: float, workers: int, chunk: int) -> None:
    with pytest.raises(ValueError):
        split([1], {}, fraction, workers, chunk)
