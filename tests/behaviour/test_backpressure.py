"""Backpressure, end to end on both transports (``memory://`` and real Kafka).

A reactor declared with ``backpressure=`` runs behind a bounded buffer apart from the batch
loop (packetflow/engine/buffer.py). These tests hold each strategy to what it promises:
``block``/``buffer`` pause the source and lose nothing (not across a stop or a rebalance
either), ``drop_newest``/``drop_oldest``/``sample`` drop exactly what they say and keep it
byte for byte on the drops topic, ``throttle`` bounds the rate, stream metrics add up, and a
slow reactor keeps the worker's memory bounded. Like tests/behaviour/test_behaviour.py, every test
declares its own topology with unique topics; ``running`` (tests/support/running.py) runs a worker.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from typing import Any

import pytest
from support.running import WAIT, Running, new_topology, running, unique

from packetflow import Client, Context, Intent, TestDriver, Topology, TopologyError, Worker
from packetflow.core import backpressure as core_backpressure
from packetflow.core.backpressure import Backpressure
from packetflow.engine.client import Received
from packetflow.engine.transport import Record
from packetflow.streams import block, buffer, drop_newest, drop_oldest, sample, throttle


class Item(Intent, type_name="bp.Item", key="key"):
    key: str
    n: int


Seen = list[tuple[str, int]]


async def wait_until(what: str, predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError(f"{what}: not after {timeout}s")
        await asyncio.sleep(0.01)


async def send_all(run: Running, items: Iterable[Item]) -> None:
    """Publish ``items`` pipelined (they reach the worker in as few batches as possible)."""
    await run.client.send_many((item, None) for item in items)


def per_key(seen: Seen) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for key, n in seen:
        out.setdefault(key, []).append(n)
    return out


def headers_of(record: Record) -> list[tuple[str, bytes]]:
    return [(k, bytes(v)) for k, v in record.headers]


async def assert_dropped_byte_for_byte(
    run: Running, source: str, drops: list[Received], strategy: str, reactor: str
) -> list[int]:
    """Every record on the drops topic is its source record's bytes plus the drop headers;
    returns the dropped intents' ``n`` in source order."""
    originals = {(r.record.partition, r.record.offset): r.record for r in await run.read(source)}
    ns = []
    for dropped in sorted(drops, key=lambda r: (r.record.partition, r.record.offset)):
        where = dropped.header("pf-source")
        assert where is not None
        topic, partition, offset = where.rsplit("/", 2)
        assert topic == source
        original = originals[(int(partition), int(offset))]
        assert dropped.record.value == original.value
        assert dropped.record.key == original.key
        headers, before = headers_of(dropped.record), headers_of(original)
        assert headers[: len(before)] == before  # the original headers, unchanged and first
        assert headers[len(before) :] == [
            ("pf-reason", b"dropped"),
            ("pf-strategy", strategy.encode()),
            ("pf-reactor", reactor.encode()),
            ("pf-source", where.encode()),
        ]
        assert isinstance(dropped.intent, Item)
        ns.append(dropped.intent.n)
    return ns


# -- the strategies as data ----------------------------------------------------------------


def test_strategies_are_data_with_their_bounds() -> None:
    assert block(100) == Backpressure("block", 100)
    assert block(100).resume_below == 50 and block(100, low=10).resume_below == 10
    assert buffer(8) == Backpressure("buffer", 8) and buffer(8).resume_below == 4
    assert not block(3).drops and not buffer(3).drops and not sample(0.5).drops
    assert drop_oldest(3).drops and drop_newest(3, discard=True).discard
    assert sample(0.25).rate == 0.25 and throttle(20).rate == 20
    for bad in (
        lambda: block(0),
        lambda: block(10, low=10),
        lambda: sample(0),
        lambda: sample(1.5),
        lambda: throttle(0),
    ):
        with pytest.raises(ValueError):
            bad()
    # packetflow.streams re-exports the very same functions
    assert block is core_backpressure.block and sample is core_backpressure.sample


def test_backpressure_is_refused_with_exactly_once() -> None:
    strategies = [block(5), buffer(5), drop_oldest(5), drop_newest(5), sample(0.5), throttle(9)]
    for strategy in strategies:
        topo = Topology(unique("eos"), namespace="", processing_guarantee="exactly_once")
        with pytest.raises(TopologyError, match="exactly_once"):

            @topo.reactor(Item, topic="items", backpressure=strategy, public=True)
            def handle(intent: Item, ctx: Context) -> None:
                return None

        assert topo.reactors == {}  # nothing half-registered

        @topo.reactor(Item, topic="items", public=True)  # the same reactor inline is fine
        def inline(intent: Item, ctx: Context) -> None:
            return None

        assert set(topo.reactors) == {"inline"}
    # and every strategy is accepted under at_least_once
    topo = Topology(unique("alo"), namespace="")
    for i, strategy in enumerate(strategies):
        topo.reactor(Item, topic="items", name=f"r{i}", backpressure=strategy, public=True)(inline)
    assert [topo.reactors[f"r{i}"].backpressure for i in range(6)] == strategies


# -- block and buffer ----------------------------------------------------------------------


@pytest.mark.parametrize("strategy", [block(5), buffer(5)], ids=["block", "buffer"])
async def test_blocking_strategy_processes_everything_in_order_within_capacity(
    broker: str, strategy: Backpressure
) -> None:
    topo = new_topology("block")
    source = unique("items")
    seen: Seen = []

    @topo.reactor(Item, topic=source, backpressure=strategy, public=True)
    async def slow(intent: Item, ctx: Context) -> None:
        await asyncio.sleep(0.002)
        seen.append((intent.key, intent.n))

    sent = [Item(key=key, n=n) for n in range(20) for key in ("a", "b", "c")]
    async with running(topo, broker) as run:
        await send_all(run, sent)
        await run.idle()
        metrics = run.worker.metrics

        # every intent exactly once, in order per key
        assert len(seen) == len(sent)
        assert per_key(seen) == {key: list(range(20)) for key in ("a", "b", "c")}
        # the buffer never held more than its capacity, and it did fill: input was paused
        assert 1 <= metrics.buffered_peak["slow"] <= strategy.capacity
        assert metrics.buffered["slow"] == 0
        assert metrics.pauses["slow"] > 0
        assert metrics.processed["slow"] == len(sent)
        # blocking never drops
        assert metrics.dropped["slow"] == 0 and not metrics.dropped_by
        assert await run.read(topo.drops_topic) == []
        # and once idle, the buffer is empty and everything it processed is committed
        assert run.worker.buffers_idle()


async def test_a_stopped_worker_leaves_what_it_buffered_to_the_next(broker: str) -> None:
    topo = new_topology("block-restart")
    source = unique("items")
    seen: Seen = []

    @topo.reactor(Item, topic=source, backpressure=block(5), public=True)
    async def slow(intent: Item, ctx: Context) -> None:
        await asyncio.sleep(0.02)
        seen.append((intent.key, intent.n))

    sent = [Item(key=key, n=n) for n in range(15) for key in ("a", "b")]
    async with running(topo, broker) as run:
        await send_all(run, sent)
        await wait_until("some processed", lambda: len(seen) >= 4)
        assert run.worker.metrics.buffered["slow"] > 0
    first = per_key(seen)
    # the worker stopped with intents still buffered (or not yet fetched)
    assert sum(map(len, first.values())) < len(sent)

    seen.clear()
    async with running(topo, broker) as run:
        await run.idle()
    second = per_key(seen)
    for key in ("a", "b"):
        done = first.get(key, [])
        assert done == list(range(len(done)))  # in order up to where it stopped
        # the next worker starts right after the last intent processed: nothing lost, and
        # (the stop being graceful) nothing processed twice
        assert second.get(key, []) == list(range(len(done), 15)), (key, done, second)


async def test_a_rebalance_hands_buffered_intents_to_the_new_owner(broker: str) -> None:
    topo = new_topology("block-rebalance")
    source = unique("items")
    seen: Seen = []
    started, gate = asyncio.Event(), asyncio.Event()

    @topo.reactor(Item, topic=source, backpressure=block(50), public=True)
    async def gated(intent: Item, ctx: Context) -> None:
        started.set()
        await gate.wait()
        await asyncio.sleep(0.005)
        seen.append((intent.key, intent.n))

    keys = [f"k{i}" for i in range(8)]
    sent = [Item(key=key, n=n) for n in range(3) for key in keys]
    revoking = asyncio.Event()
    async with running(topo, broker) as first:
        try:
            deliveries = await first.client.send_many((item, None) for item in sent)
            assert {d.partition for d in deliveries} == {0, 1}
            # everything fetched: one intent in hand (waiting at the gate), the rest buffered
            await asyncio.wait_for(started.wait(), WAIT)
            await wait_until("all fetched", lambda: first.worker.metrics.consumed == len(sent))
            assert first.worker.metrics.buffered["gated"] >= len(sent) - 1
            on_revoked = first.worker.on_revoked

            async def spy(partitions: Any) -> None:
                revoking.set()
                await on_revoked(partitions)

            first.worker.on_revoked = spy  # type: ignore[method-assign]
            async with running(topo, broker) as second:
                try:
                    await asyncio.wait_for(revoking.wait(), WAIT)  # the group is rebalancing
                    gate.set()
                    await wait_until("all processed", lambda: len(set(seen)) == len(sent))
                    await first.idle()
                    await second.idle()
                    assert len(first.worker.assignment) == len(second.worker.assignment) == 1
                    processed = (
                        first.worker.metrics.processed["gated"],
                        second.worker.metrics.processed["gated"],
                    )
                finally:
                    gate.set()  # whatever happened: a worker stops only once it is open
        finally:
            gate.set()
    # what the first worker had buffered for the partition it lost was read again by the new
    # owner: nothing lost, nothing twice, in order per key
    assert sorted(seen) == sorted((i.key, i.n) for i in sent)
    assert per_key(seen) == {key: [0, 1, 2] for key in keys}
    assert processed[1] > 0 and sum(processed) == len(sent)


class Ping(Intent, type_name="bp.Ping", key="key"):
    key: str


async def test_a_full_buffer_stalls_neither_other_topics_nor_a_stop(broker: str) -> None:
    topo = new_topology("block-apart")
    slow_topic, fast_topic = unique("slow"), unique("fast")
    topo.route(Ping, fast_topic)
    seen: Seen = []
    pinged = asyncio.Event()
    delay = [0.01]

    @topo.reactor(Item, topic=slow_topic, backpressure=block(5), public=True)
    async def slow(intent: Item, ctx: Context) -> None:
        await asyncio.sleep(delay[0])
        seen.append((intent.key, intent.n))

    @topo.reactor(Ping, topic=fast_topic, public=True)
    def fast(intent: Ping, ctx: Context) -> None:
        pinged.set()

    # 300 intents at 10 ms each is 3 s of work, most of it fetched in one batch
    sent = [Item(key=key, n=n) for n in range(150) for key in ("a", "b")]
    async with running(topo, broker) as run:
        await send_all(run, sent)
        await wait_until("the slow reactor runs", lambda: len(seen) >= 10)
        began = time.monotonic()
        await run.send(Ping(key="p"))
        await asyncio.wait_for(pinged.wait(), WAIT)
        # the other topic flows while the slow reactor's buffer is full
        assert time.monotonic() - began < 1.0
        assert run.worker.metrics.buffered_peak["slow"] <= 5
        stopping = time.monotonic()
    # a stop finishes the intent in hand, not the backlog
    assert time.monotonic() - stopping < 1.5
    done = per_key(seen)
    assert sum(map(len, done.values())) < len(sent) // 2
    delay[0] = 0.0
    async with running(topo, broker) as run:  # and the next worker takes the rest
        await wait_until("the rest", lambda: len(seen) >= len(sent), timeout=WAIT)
        await run.idle()
    assert per_key(seen) == {key: list(range(150)) for key in ("a", "b")}


# -- dropping strategies -------------------------------------------------------------------

CAPACITY, SENT = 4, 12


def expected_drops(strategy: str) -> tuple[list[int], list[int]]:
    """(processed, dropped) when intent 0 is in hand and 1..SENT-1 arrive meanwhile."""
    if strategy == "drop_newest":  # the buffer keeps the first CAPACITY that arrived
        return [0, *range(1, CAPACITY + 1)], list(range(CAPACITY + 1, SENT))
    return [0, *range(SENT - CAPACITY, SENT)], list(range(1, SENT - CAPACITY))


@pytest.mark.parametrize("discard", [False, True], ids=["kept", "discard"])
@pytest.mark.parametrize("make", [drop_newest, drop_oldest], ids=["drop_newest", "drop_oldest"])
async def test_dropping_strategies_drop_exactly_what_they_say(
    broker: str, make: Callable[..., Backpressure], discard: bool
) -> None:
    strategy = make(CAPACITY, discard=discard)
    topo = new_topology("drop", partitions=1)
    source = unique("items")
    seen: list[int] = []
    started, release = asyncio.Event(), asyncio.Event()

    @topo.reactor(Item, topic=source, backpressure=strategy, public=True)
    async def stuck(intent: Item, ctx: Context) -> None:
        started.set()
        await release.wait()
        seen.append(intent.n)

    processed, dropped = expected_drops(strategy.strategy)
    try:
        async with running(topo, broker) as run:
            await run.send(Item(key="k", n=0))
            await asyncio.wait_for(started.wait(), WAIT)  # intent 0 is in hand, blocked
            await send_all(run, [Item(key="k", n=n) for n in range(1, SENT)])
            metrics = run.worker.metrics
            await wait_until("drops counted", lambda: metrics.dropped["stuck"] == len(dropped))
            assert metrics.buffered["stuck"] == CAPACITY  # full, yet the worker kept reading
            assert metrics.pauses["stuck"] == 0  # dropping strategies never pause
            release.set()
            await run.idle()

            assert seen == processed
            assert len(seen) + metrics.dropped["stuck"] == SENT
            assert metrics.dropped_by == {strategy.strategy: len(dropped)}
            assert metrics.processed["stuck"] == len(processed)
            assert metrics.buffered_peak["stuck"] == CAPACITY
            drops = await run.read(topo.drops_topic)
            if discard:
                assert drops == []  # counted, not kept
            else:
                assert len(drops) == len(dropped)
                ns = await assert_dropped_byte_for_byte(
                    run, source, drops, strategy.strategy, "stuck"
                )
                assert ns == dropped
    finally:
        release.set()


# the admitted ones, exactly: the n-th (from 1) is admitted when floor(n * rate) steps up
def admitted(rate: Fraction, count: int) -> list[int]:
    return [n - 1 for n in range(1, count + 1) if (n * rate) // 1 != ((n - 1) * rate) // 1]


@pytest.mark.parametrize("rate", ["0.25", "0.7"])
async def test_sample_admits_exactly_its_rate_evenly(broker: str, rate: str) -> None:
    topo = new_topology("sample", partitions=1)
    source = unique("items")
    seen: list[int] = []

    @topo.reactor(Item, topic=source, backpressure=sample(float(rate)), public=True)
    def sampled(intent: Item, ctx: Context) -> None:
        seen.append(intent.n)

    count = 100
    expected = admitted(Fraction(rate), count)
    assert len(expected) == int(Fraction(rate) * count)  # 25 and 70
    async with running(topo, broker) as run:
        await send_all(run, [Item(key="k", n=n) for n in range(count)])
        drops = await run.wait_for(topo.drops_topic, count - len(expected))
        metrics = run.worker.metrics

        assert seen == expected
        gaps = {b - a for a, b in pairwise(seen)}
        assert gaps <= {int(1 / Fraction(rate)), -(-1 // Fraction(rate))}  # evenly spread
        assert metrics.processed["sampled"] == len(expected)
        assert metrics.dropped["sampled"] == count - len(expected)
        assert metrics.dropped_by == {"sample": count - len(expected)}
        ns = await assert_dropped_byte_for_byte(run, source, drops, "sample", "sampled")
        assert ns == sorted(set(range(count)) - set(expected))


# -- throttle ------------------------------------------------------------------------------


def test_throttle_spaces_intents_on_virtual_time() -> None:
    topo = new_topology("throttle-virtual")
    source = unique("items")
    at: list[float] = []
    clock: list[Callable[[], float]] = []

    @topo.reactor(Item, topic=source, backpressure=throttle(20), public=True)
    def paced(intent: Item, ctx: Context) -> None:
        at.append(clock[0]())

    began = time.perf_counter()
    with TestDriver(topo) as driver:
        clock.append(driver.clock.time)
        start = driver.clock.time()
        for n in range(10):
            driver.send(Item(key="k", n=n))
        elapsed = driver.clock.time() - start

        assert len(at) == 10
        assert at[0] == pytest.approx(start)
        # virtual time is a float near 1.7e9: exact to a microsecond
        assert [b - a for a, b in pairwise(at)] == pytest.approx([0.05] * 9, abs=1e-6)
        assert elapsed == pytest.approx(0.45)
        assert driver.metrics["processed"] == {"paced": 10}
        assert driver.metrics["dropped"] == {}
        assert driver.records(topo.drops_topic) == []
    assert time.perf_counter() - began < 5  # virtual time: no real waiting


async def test_throttle_bounds_the_rate_on_the_wall_clock(broker: str) -> None:
    topo = new_topology("throttle")
    source = unique("items")
    at: list[float] = []
    seen: Seen = []

    @topo.reactor(Item, topic=source, backpressure=throttle(20, capacity=3), public=True)
    def paced(intent: Item, ctx: Context) -> None:
        at.append(time.monotonic())
        seen.append((intent.key, intent.n))

    sent = [Item(key=key, n=n) for n in range(5) for key in ("a", "b")]
    async with running(topo, broker) as run:
        await send_all(run, sent)
        await wait_until("all processed", lambda: len(seen) == len(sent))
        await run.idle()
        metrics = run.worker.metrics

        gaps = [b - a for a, b in pairwise(at)]
        assert min(gaps) >= 0.05 - 0.005, gaps  # never faster than 20/s
        assert at[-1] - at[0] >= 0.45 - 0.01
        assert at[-1] - at[0] < 0.45 + 3.0  # and not stalled
        assert per_key(seen) == {"a": list(range(5)), "b": list(range(5))}
        # a full buffer blocks (pauses the source) rather than drops
        assert metrics.pauses["paced"] > 0 and metrics.buffered_peak["paced"] <= 3
        assert metrics.dropped["paced"] == 0
        assert await run.read(topo.drops_topic) == []


# -- stream metrics ------------------------------------------------------------------------


async def test_stream_metrics_add_up(broker: str) -> None:
    topo = new_topology("metrics")
    source = unique("items")

    @topo.reactor(Item, topic=source, public=True)
    def inline(intent: Item, ctx: Context) -> None:
        return None

    @topo.reactor(Item, topic=source, backpressure=block(10), public=True)
    async def slow(intent: Item, ctx: Context) -> None:
        await asyncio.sleep(0.002)

    @topo.reactor(Item, topic=source, backpressure=sample(0.5), public=True)
    def halved(intent: Item, ctx: Context) -> None:
        return None

    count = 40
    async with running(topo, broker) as run:
        await send_all(run, [Item(key=f"k{n % 5}", n=n) for n in range(count)])
        await run.wait_for(topo.drops_topic, count // 2)
        stats = await run.worker.stream_metrics()

    assert set(stats) == {"inline", "slow", "halved"}
    expect = {"inline": (count, 0), "slow": (count, 0), "halved": (count // 2, count // 2)}
    for name, (processed, dropped) in expect.items():
        s = stats[name]
        assert (s["processed"], s["dropped"]) == (processed, dropped), (name, s)
        assert s["errors"] == 0 and s["late"] == 0
        assert s["lag"] == 0 and s["buffer_depth"] == 0
        latency = s["latency_ms"]
        assert latency["count"] == processed, (name, latency)
        assert latency["p50"] is not None and latency["p99"] is not None
        assert 0 <= latency["p50"] <= latency["p99"] <= latency["max"]
        assert latency["mean"] <= latency["max"]
    assert stats["inline"]["buffer_peak"] == 0  # inline: no buffer
    assert 1 <= stats["slow"]["buffer_peak"] <= 10
    assert stats["slow"]["latency_ms"]["max"] >= 2  # it sleeps 2 ms per intent


# -- the bound -----------------------------------------------------------------------------

FEED = 20_000  # small intents, pre-produced: far more than the buffer holds
CAPACITY_BOUND = 100
MAX_BATCH = 5000  # the worker's default: what one fetch may bring beyond the buffer
BOUND_MIB = 24  # measured: about 9.5 MiB under block(100), about 53 MiB with all 20,000 buffered


@dataclass
class Measured:
    peak_mib: float  # tracemalloc peak during the run, worker start to stop included
    deepest: int  # the deepest the buffer was seen, sampled every 5 ms
    peak: int  # metrics.buffered_peak
    processed: int
    lag: int  # records not yet fetched when the run ended
    stopped_in: float  # seconds from request_stop to the worker stopped


async def slow_run(
    url: str, source: str, strategy: Backpressure, seconds: float, until: int | None = None
) -> Measured:
    """Run a worker whose reactor takes over a millisecond per intent for ``seconds`` (or
    until it fetched ``until`` records), under tracemalloc, and measure it."""
    topo = new_topology("bound")

    @topo.reactor(Item, topic=source, backpressure=strategy, public=True)
    async def slow(intent: Item, ctx: Context) -> None:
        await asyncio.sleep(0.001)

    deepest = 0
    tracemalloc.start()
    try:
        async with Worker(topo, url, poll_timeout=0.05, max_batch=MAX_BATCH) as worker:
            task = asyncio.create_task(worker.run())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            while loop.time() < deadline and (until is None or worker.metrics.consumed < until):
                deepest = max(deepest, worker.metrics.buffered.get("slow", 0))
                await asyncio.sleep(0.005)
            lag = (await worker.stream_metrics())["slow"]["lag"]
            stopping = loop.time()
            worker.request_stop()
            await asyncio.wait_for(task, WAIT)
            await worker.stop()
            stopped_in = loop.time() - stopping
            metrics = worker.metrics
        peak_mib = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return Measured(
        peak_mib,
        deepest,
        metrics.buffered_peak.get("slow", 0),
        metrics.processed["slow"],
        lag,
        stopped_in,
    )


@pytest.mark.kafka
async def test_a_slow_reactor_never_makes_the_worker_grow_without_bound(kafka_url: str) -> None:
    source = unique("flood")
    feeder = new_topology("bound-feed")
    feeder.reactor(Item, topic=source, name="feed", public=True)(lambda intent, ctx: None)
    async with Client(kafka_url, feeder) as client:
        await client.send_many((Item(key=f"k{n % 64}", n=n), None) for n in range(FEED))

    bounded = await slow_run(kafka_url, source, block(CAPACITY_BOUND), seconds=3.0)
    # the same feed with a buffer big enough for all of it: what unbounded would cost
    unbounded = await slow_run(kafka_url, source, block(FEED + 1), seconds=20.0, until=FEED)
    print(f"\nblock({CAPACITY_BOUND}): {bounded}\nblock({FEED + 1}): {unbounded}")

    # the buffer never held more than its capacity, and the slow reactor kept a backlog
    assert bounded.deepest <= CAPACITY_BOUND and bounded.peak == CAPACITY_BOUND
    assert 0 < bounded.processed < FEED // 2
    # the worker read ahead at most a batch beyond its buffer: the rest stayed on the broker
    assert bounded.lag >= FEED - bounded.processed - MAX_BATCH - CAPACITY_BOUND - 1
    # so its memory stayed under the bound, which buffering everything clearly exceeds
    assert bounded.peak_mib < BOUND_MIB
    assert unbounded.peak >= FEED * 9 // 10
    assert unbounded.peak_mib > 1.5 * BOUND_MIB
    # and a stop does not wait for the backlog
    assert bounded.stopped_in < 2.0
