"""Random schedules and random crash points (hypothesis, derandomised): every time that came
is fired exactly once under exactly-once, and at least once under at-least-once, where
every copy carries the id derived from (schedule, instant) so a consumer recognises it.

A worker crashes at a random operation of its producer (a send, the offsets, a commit):
its event loop is closed with whatever it had in hand (like a killed process), its consumer
leaves the group without committing anything, and a new worker with the same instance id
(the same transactional id: it aborts what the dead one left open) takes over, on the same
in-memory broker and the same virtual clock.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from support.running import unique

from packetflow import Client, Context, Intent, Topology, Worker
from packetflow.engine.clock import VirtualClock
from packetflow.engine.codec import CONTEXT_HEADER
from packetflow.engine.transport.base import TopicPartition
from packetflow.engine.transport.memory import MemoryBroker, MemoryProducer, MemoryTransport
from packetflow.temporal import Scheduler, at, cron, every, firing_id, scheduler
from packetflow.temporal.timing import Timing

T = TypeVar("T")
START = 1_779_999_960.0  # s: 2026-05-28 20:26 UTC, on a whole minute
HORIZON = 200  # s of virtual time each example runs
OPS = Context(principal="ops", capabilities=["beat:*", "schedule:*"])


class Beat(Intent, type_name="crash.Beat", key="name", requires=["beat:beat/{name}"]):
    name: str


class Crash(BaseException):
    """The process dies here (a BaseException: nothing on the way catches it as an error)."""


class _Dying(MemoryProducer):
    """A producer whose process dies at its ``fuse``-th operation."""

    fuse: list[int]  # shared by the transport's producers: operations left before the crash

    def _burn(self) -> None:
        self.fuse[0] -= 1
        if self.fuse[0] == 0:
            raise Crash

    async def send(self, *args: Any, **kwargs: Any) -> Any:
        self._burn()
        return await super().send(*args, **kwargs)

    async def send_offsets(self, *args: Any, **kwargs: Any) -> None:
        self._burn()
        await super().send_offsets(*args, **kwargs)

    async def commit(self) -> None:
        self._burn()
        await super().commit()


class _DyingTransport(MemoryTransport):
    def __init__(self, broker: MemoryBroker, fuse: int) -> None:
        super().__init__("memory://crashes", broker=broker)
        self.fuse = [fuse]

    def producer(self, *, transactional_id: str | None = None) -> MemoryProducer:
        producer = _Dying(self.broker, transactional_id)
        producer.fuse = self.fuse
        return producer


class _Incarnation:
    """One worker process: its own event loop, dying at its transport's fuse."""

    def __init__(self, topo: Topology, broker: MemoryBroker, clock: VirtualClock, fuse: int):
        self.runner = asyncio.Runner()
        self.transport = _DyingTransport(broker, fuse)
        self.worker = Worker(topo, self.transport, clock=clock, poll_timeout=0.0,
                             tick_interval=0.0, instance_id="w1")  # fmt: skip

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    async def until_idle(self) -> None:
        while await self.worker.step(0.0) or await self.worker.lag():
            pass

    def kill(self) -> None:
        consumer = self.worker._consumer
        if consumer is not None:  # None: it died while starting
            consumer.vanish()  # type: ignore[attr-defined]
        self.runner.close()  # what it had in hand dies with it


def _topology(guarantee: str) -> tuple[Topology, Scheduler]:
    topo = Topology(unique("crashes"), allow_unsigned=True, processing_guarantee=guarantee,
                    partitions=2)  # fmt: skip
    schedules = scheduler(topo)

    @topo.reactor(Beat, topic="beats", state=int)
    def beats(beat: Beat, ctx: Context, count: int) -> tuple[int, None]:
        return count + 1, None

    return topo, schedules


timings = st.one_of(
    st.builds(lambda s, p: every(s, phase=p), st.integers(3, 40), st.integers(0, 5)),
    st.builds(lambda s: at(datetime.fromtimestamp(START + s, UTC)), st.integers(1, HORIZON)),
    st.just(cron("* * * * *")),
    st.builds(lambda s, n: every(s, max_count=n), st.integers(5, 30), st.integers(1, 4)),
)


def _due(timing: Timing) -> list[int]:
    """The times (ms) ``timing``, made at START, has in [START, START + HORIZON]."""
    resolved = timing.resolve(int(START * 1000))
    times = resolved.times(int(START * 1000) - 1, 100)
    return [t for t in times if t <= (START + HORIZON) * 1000]


def _run(guarantee: str, plan: list[Timing], fuses: list[int]) -> list[tuple[str, int, str]]:
    """Run the plan through the crashes; the fired records on ``beats`` (read committed) as
    (schedule id, scheduled ms, intent id)."""
    topo, schedules = _topology(guarantee)
    clock = VirtualClock(START)
    broker = MemoryBroker(clock=clock)
    fuses = [*fuses, 0]  # the last worker never dies (0: never reached)

    async def create() -> None:
        async with Client(MemoryTransport("memory://client", broker=broker), topo) as client:
            for i, timing in enumerate(plan):
                await schedules.add(client, Beat(name=f"b{i}"), timing, id=f"s{i}", context=OPS)

    asyncio.run(create())
    life = _Incarnation(topo, broker, clock, fuses.pop(0))
    target = START + HORIZON
    while True:  # to the horizon, timer by timer, a new worker after each crash
        try:
            if not life.worker.running:
                life.run(life.worker.start())
            life.run(life.until_idle())
            due = life.worker.next_timer()
            if due is None or due > target:
                clock.advance(max(0.0, target - clock.time()))
                life.run(life.until_idle())
                break
            clock.advance(max(0.0, due - clock.time()))
        except Crash:
            life.kill()
            life = _Incarnation(topo, broker, clock, fuses.pop(0))
    life.transport.fuse[0] = -1  # a crash point not reached by now is not
    life.run(life.worker.stop())
    life.runner.close()
    out = []
    topic = topo.physical("beats")
    for p in range(len(broker.partitions(topic))):
        records, _ = broker.read(TopicPartition(topic, p), 0, read_committed=True)
        for record in records:
            headers = dict(record.headers)
            context = orjson.loads(headers[CONTEXT_HEADER])
            baggage = context["baggage"]
            out.append((baggage["schedule"], int(baggage["scheduled"]), context["intent_id"]))
    return out


plans = st.lists(timings, min_size=1, max_size=4)
crash_points = st.lists(st.integers(1, 300), min_size=1, max_size=3)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(plan=plans, fuses=crash_points)
def test_exactly_once_every_due_firing_happens_once_through_crashes(
    plan: list[Timing], fuses: list[int]
) -> None:
    fired = _run("exactly_once", plan, fuses)
    expected = Counter((f"s{i}", t) for i, timing in enumerate(plan) for t in _due(timing))
    assert Counter((s, t) for s, t, _ in fired) == expected


@settings(derandomize=True, max_examples=60, deadline=None)
@given(plan=plans, fuses=crash_points)
def test_at_least_once_every_due_firing_happens_and_duplicates_show(
    plan: list[Timing], fuses: list[int]
) -> None:
    fired = _run("at_least_once", plan, fuses)
    expected = {(f"s{i}", t) for i, timing in enumerate(plan) for t in _due(timing)}
    assert {(s, t) for s, t, _ in fired} == expected
    assert all(intent_id == firing_id(s, t) for s, t, intent_id in fired)
