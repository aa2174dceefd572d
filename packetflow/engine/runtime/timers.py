"""Timers per partition and key that survive restarts and rebalances.

An agent's timers live in a changelog-backed store of their own
(``<topology>.<agent>.timers.changelog``), so a timer set before a crash or a rebalance is
there for the next owner of the partition, and fires there (an agent that can set its timers
again from its own state when partitions are assigned, as a window can from its open
windows, keeps them in memory only: ``AgentSpec.durable_timers = False``, no changelog to
write for every timer). In memory each partition keeps
a heap by due time; setting a timer again (same key and name) moves it, cancelling removes
it. Two kinds: **clock** timers, which the worker fires as its clock passes their due time
(``AgentRuntime.on_timer``, inside the batch's transaction under exactly-once), and
**event-time** timers (a window's close), which the agent takes itself with
:meth:`TimerStore.pop_due` as its own time (a watermark) moves.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import Any

from packetflow.engine.agent import Timer
from packetflow.engine.runtime.state import StateStore


def _store_key(key: bytes, name: str) -> bytes:
    return name.encode() + b"\x00" + key


def _split(store_key: bytes) -> tuple[bytes, str]:
    name, _, key = store_key.partition(b"\x00")
    return key, name.decode()


class TimerStore:
    """One agent's timers, per partition (see the module docstring)."""

    def __init__(self, source_topic: str, store: StateStore | None = None) -> None:
        self.source_topic = source_topic  # physical: the partitions are this topic's
        self.store = store  # None: kept in memory only (AgentSpec.durable_timers)
        # per (partition, clock timer?): a heap of (due, key, name), stale entries included
        self._heaps: dict[tuple[int, bool], list[tuple[int, bytes, str]]] = {}
        # per partition: (key, name) -> (due, clock) of the live timer
        self._live: dict[int, dict[tuple[bytes, str], tuple[int, bool]]] = {}

    def live(self) -> int:
        """Live timers, across the partitions held here."""
        return sum(len(live) for live in self._live.values())

    def set(self, partition: int, key: bytes, name: str, due: int, *, clock: bool = False) -> None:
        live = self._live.get(partition)
        if live is None:
            live = self._live[partition] = {}
        entry = (due, clock)
        if live.get((key, name)) == entry:
            return
        live[(key, name)] = entry
        heap = self._heaps.get((partition, clock))
        if heap is None:
            heap = self._heaps[(partition, clock)] = []
        heapq.heappush(heap, (due, key, name))
        if self.store is not None:
            self.store.put(partition, _store_key(key, name), [due, int(clock)])

    def cancel(self, partition: int, key: bytes, name: str) -> None:
        live = self._live.get(partition)
        gone = live is not None and live.pop((key, name), None) is not None
        if gone and self.store is not None:
            self.store.delete(partition, _store_key(key, name))  # the heap entry goes stale

    def pop_due(self, partition: int, upto: int) -> list[Timer]:
        """The event-time timers of ``partition`` due at or before ``upto``, earliest first,
        removed (the agent acts on them)."""
        return self._pop(partition, False, upto)

    def clock_due(self, partitions: Iterable[int], now: int) -> list[Timer]:
        """The clock timers due at ``now`` across ``partitions``, removed, earliest first."""
        due = [t for p in partitions for t in self._pop(p, True, now)]
        return sorted(due, key=lambda t: t.due)

    def next_due(self, partition: int, *, clock: bool = True) -> int | None:
        """When the earliest live (clock, or event-time) timer of ``partition`` is due."""
        heap = self._heaps.get((partition, clock))
        if not heap:  # asked for every record a window takes: the common case first
            return None
        live = self._live[partition]
        while heap:
            due, key, name = heap[0]
            if live.get((key, name)) == (due, clock):
                return due
            heapq.heappop(heap)  # stale
        return None

    def items(self, partition: int) -> Iterator[Timer]:
        for (key, name), (due, _) in self._live.get(partition, {}).items():
            yield Timer(partition, key, name, due)

    def _pop(self, partition: int, clock: bool, upto: int) -> list[Timer]:
        heap = self._heaps.get((partition, clock))
        out: list[Timer] = []
        if not heap:
            return out
        live = self._live[partition]
        while heap and heap[0][0] <= upto:
            due, key, name = heapq.heappop(heap)
            if live.get((key, name)) != (due, clock):
                continue  # cancelled, or moved to another time
            del live[(key, name)]
            if self.store is not None:
                self.store.delete(partition, _store_key(key, name))
            out.append(Timer(partition, key, name, due))
        return out

    def partitions(self) -> list[int]:
        return list(self._live)

    # -- partitions ------------------------------------------------------------------------

    def assigned(self, partitions: Iterable[int]) -> None:
        """Rebuild the heaps of ``partitions`` from their restored store (empty when the
        timers are kept in memory only: the agent sets them again)."""
        for p in partitions:
            live: dict[tuple[bytes, str], tuple[int, bool]] = {}
            heaps: dict[bool, list[tuple[int, bytes, str]]] = {False: [], True: []}
            stored = self.store.items(p) if self.store is not None else ()
            for store_key, (due, clock) in stored:
                key, name = _split(store_key)
                live[(key, name)] = (int(due), bool(clock))
                heaps[bool(clock)].append((int(due), key, name))
            for clock, heap in heaps.items():
                heapq.heapify(heap)
                self._heaps[(p, clock)] = heap
            self._live[p] = live

    def revoked(self, partitions: Iterable[int]) -> None:
        for p in partitions:
            self._heaps.pop((p, False), None)
            self._heaps.pop((p, True), None)
            self._live.pop(p, None)


class _NoTimers:
    """The timers of an agent that declared none (``AgentSpec.timers``)."""

    def _refuse(self, *args: object, **kwargs: object) -> Any:
        raise RuntimeError("this agent keeps no timers: declare timers = True on its spec")

    set = cancel = pop_due = next_due = items = _refuse

    def live(self) -> int:
        return 0


NO_TIMERS = _NoTimers()
