"""Allen's relations (packetflow.core.intervals) against their endpoint definitions,
property-tested (derandomised), and ``within``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from packetflow.core.intervals import CONVERSE, RELATIONS, Interval, relation, within


@st.composite
def intervals(draw: st.DrawFn) -> Interval:
    start = draw(st.integers(-20, 20))
    return Interval(start, start + draw(st.integers(1, 20)))


DEFINITIONS = {
    "before": lambda a, b: a.end < b.start,
    "meets": lambda a, b: a.end == b.start,
    "overlaps": lambda a, b: a.start < b.start < a.end < b.end,
    "starts": lambda a, b: a.start == b.start and a.end < b.end,
    "during": lambda a, b: b.start < a.start and a.end < b.end,
    "finishes": lambda a, b: b.start < a.start and a.end == b.end,
    "equals": lambda a, b: a.start == b.start and a.end == b.end,
}


@settings(derandomize=True, max_examples=500, deadline=None)
@given(intervals(), intervals())
def test_exactly_one_relation_holds_and_it_is_the_one_the_endpoints_say(
    a: Interval, b: Interval
) -> None:
    holding = [name for name in RELATIONS if getattr(a, name)(b)]
    assert len(holding) == 1, holding
    name = holding[0]
    assert relation(a, b) == name
    forward = DEFINITIONS.get(name)
    if forward is not None:
        assert forward(a, b)
    else:  # a converse: its definition holds the other way round
        assert DEFINITIONS[CONVERSE[name]](b, a)
    assert relation(b, a) == CONVERSE[name]


@settings(derandomize=True, max_examples=300, deadline=None)
@given(intervals(), intervals())
def test_they_intersect_unless_one_is_before_meets_or_after_the_other(
    a: Interval, b: Interval
) -> None:
    apart = relation(a, b) in ("before", "meets", "met_by", "after")
    assert a.intersects(b) is not apart


def test_worked_examples_with_datetimes_and_window_results() -> None:
    nine = datetime(2026, 6, 1, 9, tzinfo=UTC)
    meeting = Interval(nine, nine + timedelta(hours=1))
    call = Interval(nine + timedelta(minutes=30), nine + timedelta(hours=2))
    assert relation(meeting, call) == "overlaps"
    opening = Interval.at(nine)  # an instant at its start both starts and meets it
    assert opening.starts(meeting) and opening.meets(meeting)
    assert meeting.contains_instant(nine) and not meeting.contains_instant(meeting.end)

    class Window:  # what a window's result looks like: start and end
        start, end = 0, 60_000

    assert relation(Interval.of(Window()), Interval(60_000, 120_000)) == "meets"
    assert within(meeting, Interval.at(meeting.end + timedelta(minutes=4)), timedelta(minutes=5))
    assert not within(meeting, Interval.at(meeting.end + timedelta(minutes=6)),
                      timedelta(minutes=5))  # fmt: skip
    assert within(Interval(0, 10), Interval(12, 20), 5) and not within(
        Interval(0, 10), Interval(-1, 3), 5
    )
    with pytest.raises(ValueError, match="ends after it starts"):
        Interval(5, 4)
