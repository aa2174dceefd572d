"""Window kinds: which windows an intent falls into, when each closes, how they merge.

Pure functions over one key's window state (no I/O), all times in integer milliseconds of
event time. The state is plain lists and dicts so it goes to the changelog as JSON. A slot
is ``[start, end, acc, count, context]``; ``context`` is the last contributor's raw context
headers, which the window's result inherits.

- :class:`Tumbling` ``[start, start + size)``, back to back.
- :class:`Hopping` ``[start, start + size)`` every ``advance``: an intent is in several.
- :class:`Sliding` one window per distinct event time ``t``: everything in ``(t - size, t]``.
- :class:`Session` per key, intents no more than ``gap`` apart; ``[first, last]``.
- :class:`Count` every ``size`` intents of a key (every ``step``, if it hops); ``[first,
  last]`` event times.

A time window closes when the partition's watermark reaches its close time (its end plus
the grace period; a session's last intent plus gap plus grace); an intent whose windows have
all closed is late.
"""

from __future__ import annotations

import abc
import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from packetflow.streams.aggregate import Aggregate

START, END, ACC, COUNT, CTX = range(5)
Slot = list[Any]
State = dict[str, Any]


def _ms(value: float | timedelta, what: str) -> int:
    ms = int(value.total_seconds() * 1000 if isinstance(value, timedelta) else value * 1000)
    if ms <= 0:
        raise ValueError(f"{what} must be positive")
    return ms


@dataclass
class Added:
    """What one intent did to a key's windows."""

    changed: list[Slot] = field(default_factory=list)  # slots whose value changed
    opened: list[Slot] = field(default_factory=list)  # new or moved: (re)schedule closing
    full: list[Slot] = field(default_factory=list)  # count windows that just filled up
    late: bool = False  # it fell into no open window


class Window(abc.ABC):
    """A kind of window. ``kind`` names it in descriptions."""

    kind: str = "window"
    timed: bool = True  # closes as time passes (all but count windows)
    needs_merge: bool = False

    def new_state(self) -> State:
        return {"s": []}

    @abc.abstractmethod
    def add(
        self, state: State, t: int, value: Any, ctx: Any, watermark: int, grace: int,
        agg: Aggregate,
    ) -> Added: ...  # fmt: skip

    def close_at(self, slot: Slot, grace: int) -> int:
        return int(slot[END]) + grace

    def result(self, state: State, slot: Slot, agg: Aggregate) -> tuple[Any, int]:
        """The slot's accumulator and how many intents it holds."""
        return slot[ACC], slot[COUNT]

    def remove(self, state: State, slot: Slot, watermark: int, grace: int) -> None:
        state["s"].remove(slot)

    def empty(self, state: State) -> bool:
        """Whether the key's state holds nothing any window needs (so it can be deleted)."""
        return not state["s"]

    def find(self, state: State, start: int) -> Slot | None:
        for slot in state["s"]:
            if slot[START] == start:
                return slot
        return None

    def _fold_into(
        self, state: State, start: int, end: int, value: Any, ctx: Any, agg: Aggregate,
        out: Added,
    ) -> None:  # fmt: skip
        """Fold ``value`` into the window ``[start, end)``, opening it if it is new."""
        slot = self.find(state, start)
        if slot is None:
            slot = [start, end, agg.init(), 0, None]
            state["s"].append(slot)
            out.opened.append(slot)
        _fold(slot, value, ctx, agg)
        out.changed.append(slot)

    def describe(self) -> str:
        return self.kind


def _fold(slot: Slot, value: Any, ctx: Any, agg: Aggregate) -> None:
    slot[ACC] = agg.add(slot[ACC], value)
    slot[COUNT] += 1
    slot[CTX] = ctx


@dataclass(frozen=True)
class Tumbling(Window):
    """Fixed, back-to-back windows of ``size`` seconds (or a timedelta)."""

    size: float | timedelta
    kind = "tumbling"

    @property
    def size_ms(self) -> int:
        return _ms(self.size, "tumbling window size")

    def add(
        self, state: State, t: int, value: Any, ctx: Any, watermark: int, grace: int,
        agg: Aggregate,
    ) -> Added:  # fmt: skip
        size = self.size_ms
        start = t - t % size
        if watermark >= start + size + grace:
            return Added(late=True)
        out = Added()
        self._fold_into(state, start, start + size, value, ctx, agg, out)
        return out

    def describe(self) -> str:
        return f"tumbling {self.size_ms / 1000:g}s"


@dataclass(frozen=True)
class Hopping(Window):
    """Windows of ``size`` starting every ``advance`` (so each intent is in size/advance)."""

    size: float | timedelta
    advance: float | timedelta
    kind = "hopping"

    def __post_init__(self) -> None:
        if _ms(self.advance, "hopping advance") > _ms(self.size, "hopping window size"):
            raise ValueError("a hopping window's advance cannot exceed its size")

    def add(
        self, state: State, t: int, value: Any, ctx: Any, watermark: int, grace: int,
        agg: Aggregate,
    ) -> Added:  # fmt: skip
        size, advance = _ms(self.size, "size"), _ms(self.advance, "advance")
        out = Added()
        start = t - t % advance
        while start > t - size:
            if watermark < start + size + grace:
                self._fold_into(state, start, start + size, value, ctx, agg, out)
            start -= advance
        out.late = not out.changed
        return out

    def describe(self) -> str:
        size, advance = _ms(self.size, "size"), _ms(self.advance, "advance")
        return f"hopping {size / 1000:g}s every {advance / 1000:g}s"


@dataclass(frozen=True)
class Sliding(Window):
    """For each distinct event time ``t``, the intents in ``(t - size, t]``.

    Keeps each intent's own accumulator until no open or future window can need it, and
    merges them when a window is read (so its aggregate needs ``merge``).
    """

    size: float | timedelta
    kind = "sliding"
    needs_merge = True

    def new_state(self) -> State:
        return {"s": [], "c": []}  # slots (one per anchor time), contributions [t, acc]

    def add(
        self, state: State, t: int, value: Any, ctx: Any, watermark: int, grace: int,
        agg: Aggregate,
    ) -> Added:  # fmt: skip
        size = _ms(self.size, "sliding window size")
        # the open windows holding t: its own (if already there) and later ones, (t, t + size)
        holding = [s for s in state["s"] if s[START] < t <= s[END] and watermark < s[END] + grace]
        opens_own = watermark < t + grace
        if not opens_own and not holding:
            return Added(late=True)
        contributions: list[list[Any]] = state["c"]
        own = [t, agg.add(agg.init(), value)]
        contributions.insert(bisect.bisect_right(contributions, t, key=lambda c: c[0]), own)
        out = Added(changed=holding)
        if opens_own:
            slot = self.find(state, t - size)
            if slot is None:
                slot = [t - size, t, None, 0, ctx]
                state["s"].append(slot)
                out.opened.append(slot)
                holding.append(slot)
            slot[CTX] = ctx
        return out

    def result(self, state: State, slot: Slot, agg: Aggregate) -> tuple[Any, int]:
        merge = agg.merge
        assert merge is not None
        acc, n = agg.init(), 0
        for t, one in state["c"]:
            if slot[START] < t <= slot[END]:
                acc = merge(acc, one)
                n += 1
        return acc, n

    def remove(self, state: State, slot: Slot, watermark: int, grace: int) -> None:
        state["s"].remove(slot)
        size = _ms(self.size, "sliding window size")
        oldest_open = min((s[END] for s in state["s"]), default=watermark - grace)
        cutoff = min(oldest_open, watermark - grace) - size
        state["c"] = [c for c in state["c"] if c[0] > cutoff]

    def empty(self, state: State) -> bool:
        return not state["s"] and not state["c"]  # later windows may still need contributions

    def describe(self) -> str:
        return f"sliding {_ms(self.size, 'size') / 1000:g}s"


@dataclass(frozen=True)
class Session(Window):
    """Per key, a window of intents no more than ``gap`` apart; closes ``gap`` after the last."""

    gap: float | timedelta
    kind = "session"
    needs_merge = True

    def add(
        self, state: State, t: int, value: Any, ctx: Any, watermark: int, grace: int,
        agg: Aggregate,
    ) -> Added:  # fmt: skip
        gap = _ms(self.gap, "session gap")
        slots: list[Slot] = state["s"]
        joined = [s for s in slots if s[START] - gap <= t <= s[END] + gap]
        start = min([t, *(s[START] for s in joined)])
        end = max([t, *(s[END] for s in joined)])
        if watermark >= end + gap + grace:
            return Added(late=True)
        merge = agg.merge
        assert merge is not None
        acc, count = agg.init(), 0
        latest: Slot | None = None
        for s in sorted(joined, key=lambda s: s[START]):
            acc = merge(acc, s[ACC])
            count += s[COUNT]
            if latest is None or s[END] >= latest[END]:
                latest = s
            slots.remove(s)
        slot = [start, end, acc, count, latest[CTX] if latest else None]
        if latest is None or t >= latest[END]:
            slot[CTX] = ctx
        slot[ACC] = agg.add(slot[ACC], value)
        slot[COUNT] += 1
        slots.append(slot)
        return Added(changed=[slot], opened=[slot])

    def close_at(self, slot: Slot, grace: int) -> int:
        return int(slot[END]) + _ms(self.gap, "session gap") + grace

    def describe(self) -> str:
        return f"session, gap {_ms(self.gap, 'gap') / 1000:g}s"


@dataclass(frozen=True)
class Count(Window):
    """Every ``size`` intents of a key form a window (a new one every ``step``, default size)."""

    size: int
    step: int | None = None
    kind = "count"
    timed = False

    def __post_init__(self) -> None:
        if self.size < 1 or (self.step is not None and not 1 <= self.step <= self.size):
            raise ValueError("count windows need size >= 1 and 1 <= step <= size")

    def new_state(self) -> State:
        return {"s": [], "n": 0}

    def add(
        self, state: State, t: int, value: Any, ctx: Any, watermark: int, grace: int,
        agg: Aggregate,
    ) -> Added:  # fmt: skip
        seen = state["n"]
        state["n"] = seen + 1
        out = Added()
        if seen % (self.step or self.size) == 0:
            slot = [t, t, agg.init(), 0, None]
            state["s"].append(slot)
        for slot in state["s"]:
            _fold(slot, value, ctx, agg)
            slot[START] = min(slot[START], t)
            slot[END] = max(slot[END], t)
            out.changed.append(slot)
            if slot[COUNT] >= self.size:
                out.full.append(slot)
        return out

    def remove(self, state: State, slot: Slot, watermark: int, grace: int) -> None:
        state["s"] = [s for s in state["s"] if s is not slot]

    def describe(self) -> str:
        step = f" every {self.step}" if self.step and self.step != self.size else ""
        return f"count {self.size}{step}"


def window_of(spec: Window | Callable[..., Window]) -> Window:
    if not isinstance(spec, Window):
        raise TypeError(f"not a window kind: {spec!r} (use Tumbling(10), Session(30), ...)")
    return spec
