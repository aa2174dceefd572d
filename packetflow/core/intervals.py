"""Intervals of time and Allen's thirteen relations between them, and ``within``.

An :class:`Interval` is half-open, ``[start, end)``, of numbers (ms, s) or aware datetimes;
an instant is an interval whose start is its end (``Interval.at(t)``). For two intervals
with ``start < end``, exactly one of Allen's relations holds (:func:`relation` names it):

=============  ================================  ==========================
relation       endpoints                          converse
=============  ================================  ==========================
before         a.end < b.start                    after
meets          a.end == b.start                   met_by
overlaps       a.start < b.start < a.end < b.end  overlapped_by
starts         a.start == b.start, a.end < b.end  started_by
during         b.start < a.start, a.end < b.end   contains
finishes       b.start < a.start, a.end == b.end  finished_by
equals         a.start == b.start, a.end == b.end equals
=============  ================================  ==========================

Pure functions, for reactors, window results (anything with ``start`` and ``end``) and
conditions; property-tested against these definitions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

RELATIONS = (
    "before", "meets", "overlaps", "starts", "during", "finishes", "equals",
    "finished_by", "contains", "started_by", "overlapped_by", "met_by", "after",
)  # fmt: skip
CONVERSE = dict(zip(RELATIONS, reversed(RELATIONS), strict=True))


class Spanning(Protocol):
    """Anything with a start and an end (a window's result, say)."""

    @property
    def start(self) -> Any: ...
    @property
    def end(self) -> Any: ...


@dataclass(frozen=True, order=True)
class Interval:
    """``[start, end)``; ``start == end`` is an instant."""

    start: Any
    end: Any

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"an interval ends after it starts ({self.start} > {self.end})")

    @classmethod
    def at(cls, instant: Any) -> Interval:
        """The instant ``instant`` as an interval."""
        return cls(instant, instant)

    @classmethod
    def of(cls, spanning: Spanning) -> Interval:
        """The interval of anything with ``start`` and ``end`` (a window's result)."""
        return cls(spanning.start, spanning.end)

    @property
    def instant(self) -> bool:
        return self.start == self.end

    def duration(self) -> Any:
        return self.end - self.start

    def contains_instant(self, t: Any) -> bool:
        """Whether ``t`` falls in ``[start, end)``."""
        return bool(self.start <= t < self.end)

    def before(self, other: Interval) -> bool:
        return bool(self.end < other.start)

    def after(self, other: Interval) -> bool:
        return other.before(self)

    def meets(self, other: Interval) -> bool:
        return bool(self.end == other.start)

    def met_by(self, other: Interval) -> bool:
        return other.meets(self)

    def overlaps(self, other: Interval) -> bool:
        return bool(self.start < other.start < self.end < other.end)

    def overlapped_by(self, other: Interval) -> bool:
        return other.overlaps(self)

    def starts(self, other: Interval) -> bool:
        return bool(self.start == other.start and self.end < other.end)

    def started_by(self, other: Interval) -> bool:
        return other.starts(self)

    def during(self, other: Interval) -> bool:
        return bool(other.start < self.start and self.end < other.end)

    def contains(self, other: Interval) -> bool:
        return other.during(self)

    def finishes(self, other: Interval) -> bool:
        return bool(other.start < self.start and self.end == other.end)

    def finished_by(self, other: Interval) -> bool:
        return other.finishes(self)

    def equals(self, other: Interval) -> bool:
        return bool(self.start == other.start and self.end == other.end)

    def intersects(self, other: Interval) -> bool:
        """Whether they share time (overlaps, starts, during, finishes, equals or a
        converse of one of them)."""
        return bool(self.start < other.end and other.start < self.end)


def relation(a: Interval, b: Interval) -> str:
    """Which of Allen's relations holds between ``a`` and ``b`` (proper intervals: one
    exactly; for instants the first in ``RELATIONS`` order that holds)."""
    for name in RELATIONS:
        if getattr(a, name)(b):
            return name
    raise ValueError(f"no relation between {a} and {b}")  # unreachable for proper intervals


def within(first: Interval, then: Interval, limit: Any) -> bool:
    """Whether ``then`` starts no earlier than ``first`` starts and no later than ``limit``
    (a duration, or a number in the intervals' unit) after ``first`` ends: "B within 5
    minutes of A"."""
    if isinstance(limit, timedelta) and not isinstance(first.start, datetime):
        limit = limit.total_seconds()
    return bool(first.start <= then.start <= first.end + limit)
