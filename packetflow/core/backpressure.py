"""Backpressure strategies: what a reactor does when intents arrive faster than it handles them.

A reactor declared with ``backpressure=`` runs apart from the worker's batch loop, behind a
buffer of at most ``capacity`` intents, so a slow reactor neither stalls the worker's other
topics nor makes its memory grow::

    @topology.reactor(Alert, topic="alerts", backpressure=block(100))

``block`` and ``buffer(n)`` pause the reactor's source partitions when the buffer is full and
resume them once it drained to ``low``; ``drop_oldest`` / ``drop_newest`` drop instead;
``sample(rate)`` admits that fraction; ``throttle(per_second)`` runs the reactor at most that
often (blocking when the buffer fills). Every dropped or sampled-out intent is counted and,
unless ``discard=True``, kept byte for byte on the topology's drops topic with the strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

STRATEGIES = ("block", "buffer", "drop_oldest", "drop_newest", "sample", "throttle")
DEFAULT_CAPACITY = 1000


@dataclass(frozen=True)
class Backpressure:
    """A strategy and its bounds (made by the functions below)."""

    strategy: str
    capacity: int = DEFAULT_CAPACITY
    low: int | None = None  # resume below this (blocking strategies); default capacity // 2
    rate: float | None = None  # sample: fraction admitted; throttle: intents per second
    discard: bool = False  # dropped intents are only counted, not kept on the drops topic

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown backpressure strategy {self.strategy!r}")
        if self.capacity < 1:
            raise ValueError("backpressure capacity must be at least 1")
        if self.low is not None and not 0 <= self.low < self.capacity:
            raise ValueError("backpressure low-water mark must be >= 0 and below the capacity")
        if self.strategy == "sample" and not (self.rate is not None and 0 < self.rate <= 1):
            raise ValueError("sample(rate): rate is the fraction admitted, 0 < rate <= 1")
        if self.strategy == "throttle" and not (self.rate is not None and self.rate > 0):
            raise ValueError("throttle(per_second): per_second must be > 0")

    @property
    def resume_below(self) -> int:
        return self.capacity // 2 if self.low is None else self.low

    @property
    def drops(self) -> bool:
        """Whether the strategy ever drops instead of blocking when full."""
        return self.strategy in ("drop_oldest", "drop_newest")

    def __str__(self) -> str:
        rate = f", rate={self.rate:g}" if self.rate is not None else ""
        return f"{self.strategy}(capacity={self.capacity}{rate})"


def block(capacity: int = DEFAULT_CAPACITY, *, low: int | None = None) -> Backpressure:
    """Pause the source partitions while ``capacity`` intents wait; resume below ``low``."""
    return Backpressure("block", capacity, low)


def buffer(n: int, *, low: int | None = None) -> Backpressure:
    """Buffer up to ``n`` intents, then block like :func:`block`."""
    return Backpressure("buffer", n, low)


def drop_oldest(capacity: int = DEFAULT_CAPACITY, *, discard: bool = False) -> Backpressure:
    """When full, drop the longest-waiting intent to make room for the new one."""
    return Backpressure("drop_oldest", capacity, discard=discard)


def drop_newest(capacity: int = DEFAULT_CAPACITY, *, discard: bool = False) -> Backpressure:
    """When full, drop the arriving intent."""
    return Backpressure("drop_newest", capacity, discard=discard)


def sample(rate: float, capacity: int = DEFAULT_CAPACITY, *, discard: bool = False) -> Backpressure:
    """Admit exactly ``rate`` of the intents (evenly spread), drop the rest; block when full."""
    return Backpressure("sample", capacity, rate=rate, discard=discard)


def throttle(per_second: float, capacity: int = DEFAULT_CAPACITY) -> Backpressure:
    """Run the reactor at most ``per_second`` times a second; block when the buffer is full."""
    return Backpressure("throttle", capacity, rate=per_second)
