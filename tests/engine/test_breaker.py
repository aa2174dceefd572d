"""The crash-loop breaker's judgement, from the marks commits carry (no process dies here;
tests/processes/test_recovery.py kills real workers)."""

from __future__ import annotations

import pytest

from packetflow.engine.runtime.breaker import Breaker, mark, read_mark
from packetflow.engine.transport import Committed, TopicPartition

P0, P1 = TopicPartition("jobs", 0), TopicPartition("jobs", 1)


def assign(breaker: Breaker, metadata: str, start: int = 10, end: int = 20) -> str:
    return breaker.assigned({P0: Committed(start, metadata)}, {P0: start}, {P0: end})[P0]


def test_marks_round_trip_and_foreign_metadata_is_no_mark() -> None:
    assert read_mark(mark(2, True)) == (2, True)
    assert read_mark(mark(0, False)) == (0, False)
    assert read_mark("") is None and read_mark("someone else's") is None
    assert read_mark("pf-inflight:x:1") is None


def test_a_clean_hand_over_counts_no_death() -> None:
    breaker = Breaker(limit=3, window=100)
    assert assign(breaker, "") == mark(0, False)  # our own death here will count
    assert not breaker.probing and not breaker.poisoned


def test_deaths_count_until_the_partition_is_probed_and_the_record_set_aside() -> None:
    breaker = Breaker(limit=3, window=100)
    first = assign(breaker, mark(0, False))  # the previous owner died working from 10
    assert first == mark(1, False) and not breaker.probing
    second = assign(Breaker(limit=3, window=100), first)
    assert second == mark(2, True)  # limit - 1 deaths: one record at a time from here
    probing = Breaker(limit=3, window=100)
    assert assign(probing, second) == mark(2, True) and probing.poisoned
    assert probing.poison(P0, 10) == 3  # the record at 10 killed three workers
    assert not probing.poisoned and P0 in probing.probing  # the rest is still probed


def test_nothing_to_read_means_nobody_died_there() -> None:
    breaker = Breaker(limit=3, window=100)
    assert assign(breaker, mark(2, True), start=20, end=20) == mark(0, False)
    assert not breaker.poisoned and not breaker.probing


def test_probing_runs_one_partition_for_a_window_then_stops() -> None:
    breaker = Breaker(limit=2, window=3)
    breaker.assigned(
        {P0: Committed(5, mark(0, False)), P1: Committed(7, mark(0, False))},
        {P0: 5, P1: 7},
        {P0: 9, P1: 9},
    )
    assert set(breaker.probing) == {P0, P1}
    assert breaker.next_probe([P1]) == P1 and breaker.next_probe([P0, P1]) == P0
    assert breaker.marks([P0]) == {P0: mark(1, True)}
    breaker.processed(P0, 2)
    assert P0 in breaker.probing
    breaker.processed(P0, 1)
    assert P0 not in breaker.probing and breaker.marks([P0]) == {P0: mark(0, False)}
    breaker.forget([P1])
    assert breaker.next_probe([P0, P1]) is None


def test_a_poison_record_that_is_gone_is_forgotten() -> None:
    breaker = Breaker(limit=2, window=10)
    assign(breaker, mark(1, True))
    assert breaker.poison(P0, 12) is None  # retention took offset 10 meanwhile
    assert not breaker.poisoned


def test_the_limit_is_at_least_two() -> None:
    with pytest.raises(ValueError):
        Breaker(limit=1, window=10)
