"""A reactor run behind a bounded buffer, apart from the batch loop: its backpressure strategy.

The batch loop hands each authorised intent to :meth:`BufferedReactor.offer`; one task takes
them in order and runs the reactor. The buffer never holds more than the strategy's
capacity: blocking strategies pause the reactor's source partitions when it is full (the
worker offers no more than :attr:`BufferedReactor.room`, holding the rest of a batch back;
``offer`` waits for room only as a last resort), dropping ones divert an intent to the
drops topic. Offsets stay uncommitted until the intent's effects are done
(:meth:`safe_offset`), so at-least-once holds: what is still buffered when the worker stops
or loses a partition is read again. Authorisation holds until the reactor runs: as an intent
leaves the buffer, the token that authorised it is checked again for expiry and revocation
(``recheck``), and it is denied instead if it no longer holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from fractions import Fraction
from typing import NamedTuple

from packetflow.core.backpressure import Backpressure
from packetflow.core.context import Context
from packetflow.core.intent import Intent
from packetflow.core.reactor import ReactorSpec
from packetflow.engine.clock import Clock
from packetflow.engine.codec import REACTOR_HEADER, REASON_HEADER, STRATEGY_HEADER
from packetflow.engine.runtime.metrics import WorkerMetrics
from packetflow.engine.transport import Record, TopicPartition


class _Item(NamedTuple):
    record: Record
    intent: Intent
    context: Context
    token_raw: bytes | None  # what authorised it, checked again when it leaves the buffer
    since: float  # perf_counter when offered


async def _always_valid(record: Record, intent: Intent, token_raw: bytes | None) -> bool:
    return True


class BufferedReactor:
    """One reactor's buffer, its strategy and the task that drains it."""

    def __init__(
        self,
        spec: ReactorSpec,
        strategy: Backpressure,
        source_topic: str,
        react: Callable[[ReactorSpec, Record, Intent, Context], Awaitable[None]],
        drop: Callable[[Record, list[tuple[str, str]]], Awaitable[None]],
        pause: Callable[[str], None],
        resume: Callable[[str], None],
        clock: Clock,
        metrics: WorkerMetrics,
        recheck: Callable[[Record, Intent, bytes | None], Awaitable[bool]] = _always_valid,
    ) -> None:
        self.spec = spec
        self._recheck = recheck
        self.strategy = strategy
        self.source_topic = source_topic  # physical; paused and resumed as a whole
        self._react = react
        self._drop = drop
        self._pause = pause
        self._resume = resume
        self._clock = clock
        self._metrics = metrics
        self._queue: deque[_Item] = deque()
        # offsets offered and not yet done, per partition, in offset order (dicts keep it)
        self._pending: dict[TopicPartition, dict[int, None]] = {}
        self._paused = False
        self._changed = asyncio.Event()  # something was taken from, or put into, the buffer
        self._in_flight: _Item | None = None
        self._task: asyncio.Task[None] | None = None
        self._offered = 0  # for sampling
        # sample: the fraction admitted, as the ratio of integers the float was written as
        self._sample = Fraction(strategy.rate or 1.0).limit_denominator(1_000_000)
        self._next_run = 0.0  # throttle: clock time the next intent may run
        self.done = 0  # intents whose handling finished (advances safe offsets)

    # -- the batch loop's side -----------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._drain(), name=f"packetflow-{self.spec.name}")

    async def offer(
        self, record: Record, intent: Intent, context: Context, token_raw: bytes | None = None
    ) -> None:
        """Take an intent in (or drop it, or wait for room, as the strategy says)."""
        strategy = self.strategy
        if strategy.strategy == "sample":
            self._offered += 1
            # admit exactly `rate` of them, evenly: when floor(n * rate) steps up (in integers:
            # in floats 90 * 0.7 is 62.99..., which would admit the 91st instead of the 90th)
            n, num, den = self._offered, self._sample.numerator, self._sample.denominator
            if n * num // den == (n - 1) * num // den:
                await self._dropped(record, "sample")
                return
        if len(self._queue) >= strategy.capacity:
            if strategy.strategy == "drop_newest":
                await self._dropped(record, "drop_newest")
                return
            if strategy.strategy == "drop_oldest":
                oldest = self._queue.popleft()
                self._forget(oldest.record)
                await self._dropped(oldest.record, "drop_oldest")
            else:
                self._block()
                while len(self._queue) >= strategy.capacity:
                    self._changed.clear()
                    await self._changed.wait()
        tp = TopicPartition(record.topic, record.partition)
        self._pending.setdefault(tp, {})[record.offset] = None
        self._queue.append(_Item(record, intent, context, token_raw, time.perf_counter()))
        depth = len(self._queue)
        if depth >= strategy.capacity and not strategy.drops:
            self._block()  # full now: fetch no more until it drains
        self._gauge(depth)
        self._changed.set()

    def safe_offset(self, tp: TopicPartition, consumed: int) -> int:
        """The next offset of ``tp`` that may be committed: before anything still pending."""
        pending = self._pending.get(tp)
        if pending:
            return min(next(iter(pending)), consumed)
        return consumed

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def room(self) -> int | None:
        """How many more intents a blocking strategy takes before ``offer`` would wait for
        room (None: a dropping strategy never waits)."""
        if self.strategy.drops:
            return None
        return max(self.strategy.capacity - len(self._queue), 0)

    @property
    def idle(self) -> bool:
        return not self._queue and self._in_flight is None

    async def revoke(self, partitions: set[TopicPartition]) -> None:
        """Forget what is buffered for ``partitions`` (read again by their next owner).

        Their offsets stay pending, so the commit made before letting the partitions go
        stops before them; :meth:`release` forgets them once that commit is made.
        """
        self._queue = deque(
            i
            for i in self._queue
            if TopicPartition(i.record.topic, i.record.partition) not in partitions
        )
        while self._in_flight is not None and _tp(self._in_flight.record) in partitions:
            self._changed.clear()
            await self._changed.wait()
        self._gauge(len(self._queue))
        self._changed.set()

    def release(self, partitions: set[TopicPartition]) -> None:
        """Forget the pending offsets of revoked ``partitions`` (their last commit is made)."""
        for tp in partitions:
            self._pending.pop(tp, None)

    async def stop(self) -> None:
        """Finish the intent in hand; leave the rest uncommitted for the next run."""
        # Empty the buffer first, or the task would take the next intent as soon as the one
        # in hand is done. Their offsets stay pending: the last commit stops before them.
        self._queue.clear()
        if self._task is not None:
            while self._in_flight is not None:
                self._changed.clear()
                await self._changed.wait()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._gauge(0)

    # -- the draining task ---------------------------------------------------------------

    async def _drain(self) -> None:
        rate = self.strategy.rate if self.strategy.strategy == "throttle" else None
        while True:
            while not self._queue:
                self._changed.clear()
                await self._changed.wait()
            if rate is not None:
                wait = self._next_run - self._clock.time()
                if wait > 0:
                    await self._clock.sleep(wait)
                self._next_run = max(self._next_run, self._clock.time()) + 1.0 / rate
                if not self._queue:
                    continue  # revoked meanwhile
            item = self._in_flight = self._queue.popleft()
            try:
                if await self._recheck(item.record, item.intent, item.token_raw):
                    await self._react(self.spec, item.record, item.intent, item.context)
            finally:
                self._in_flight = None
                self._forget(item.record)
                self.done += 1
                self._metrics.observe_latency(
                    self.spec.name, (time.perf_counter() - item.since) * 1000
                )
                depth = len(self._queue)
                self._gauge(depth)
                if self._paused and depth <= self.strategy.resume_below:
                    self._paused = False
                    self._resume(self.source_topic)
                self._changed.set()

    # -- helpers -------------------------------------------------------------------------

    def _block(self) -> None:
        if not self._paused:
            self._paused = True
            self._metrics.pauses[self.spec.name] += 1
            self._pause(self.source_topic)

    async def _dropped(self, record: Record, how: str) -> None:
        self._metrics.dropped[self.spec.name] += 1
        self._metrics.dropped_by[how] += 1
        if not self.strategy.discard:
            await self._drop(
                record,
                [
                    (REASON_HEADER, "dropped"),
                    (STRATEGY_HEADER, how),
                    (REACTOR_HEADER, self.spec.name),
                ],
            )

    def _forget(self, record: Record) -> None:
        pending = self._pending.get(_tp(record))
        if pending is not None:
            pending.pop(record.offset, None)

    def _gauge(self, depth: int) -> None:
        name = self.spec.name
        self._metrics.buffered[name] = depth
        if depth > self._metrics.buffered_peak.get(name, 0):
            self._metrics.buffered_peak[name] = depth


def _tp(record: Record) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)
