"""decay's choice between the one-pass chunk and the exact scan (pure): when to try again."""

from __future__ import annotations

from crontask_jobs.tasks.decay import _Contention


def attempts(outcomes: list[bool], chunks: int) -> list[bool]:
    """Which of `chunks` chunks try the one pass, when attempt k meets a lock iff outcomes[k]."""
    c, tried, k = _Contention(), [], 0
    for _ in range(chunks):
        t = c.try_one_pass()
        tried.append(t)
        if t:
            c.one_pass_done(met_a_lock=outcomes[k] if k < len(outcomes) else False)
            k += 1
    return tried


def test_without_contention_every_chunk_is_one_pass() -> None:
    assert attempts([], 10) == [True] * 10


def test_each_failure_in_a_row_doubles_the_chunks_that_skip_the_attempt() -> None:
    tried = attempts([True, True, True], 12)
    assert tried == [True, False, True, False, False, True, False, False, False, False,
                     True, True]


def test_a_success_resets_the_wait() -> None:
    tried = attempts([True, True, False, True], 10)
    assert tried == [True, False, True, False, False, True, True, False, True, True]


def test_the_wait_is_bounded() -> None:
    tried = attempts([True] * 20, 400)
    gaps, run = [], 0
    for t in tried:
        if t:
            gaps.append(run)
            run = 0
        else:
            run += 1
    assert max(gaps) == 64
