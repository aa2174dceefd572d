"""Actor messages per second on Kafka, side by side with the plain reactor path.

``python -m benchmarks.actors [--messages N] [--asks M] [--bootstrap host:port]``: the same
work (a per-key running count) as a stateful reactor and as an actor, each on its own
pre-produced input of N messages over 1,000 keys, timed from the worker's start to its last
message (a worker in this process, its CPU per message beside); then N messages to an actor
that asks another actor for each (an ask round trip inside, the answer a message of the
asker); then M sequential asks from outside (``Client.ask``) to an actor, with their p50 and
p99; then a migration: a second worker joins one holding the N messages' actors, and the
time until it took its partitions (their state restored) and each partition's restore
time are printed. Printed as ratios to the reactor, not asserted: see the README's Actors
section.
Unsigned capabilities (both paths alike): the signed-token path is measured in the main
benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks import broker as brokers
from packetflow import Client, Context, Intent, Security, Topology, Worker, reply
from packetflow.actors import AskTimedOut, actor, ask
from packetflow.engine.security.seal import new_secret

KEYS = 1_000
OPS = Context(principal="bench", capabilities=["count:*"])
# one secret for the run: workers seal the engine's intents (asks' answers, timeouts)
SECURITY = Security(allow_unsigned=True, worker_secret=new_secret())


def _topology(name: str) -> Topology:
    return Topology(name, security=SECURITY, partitions=4, namespace="")


class Count(Intent, type_name="actorbench.Count", key="key", requires=["count:key/{key}"]):
    key: str


class Ping(Intent, type_name="actorbench.Ping", key="key", internal=True):
    key: str


class Pong(Intent, type_name="actorbench.Pong", key="key", internal=True):
    key: str
    seen: int


@dataclass
class Row:
    path: str
    messages: int
    seconds: float
    cpu_us: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def _reactor(name: str) -> tuple[Topology, str]:
    topo = _topology(name)

    @topo.reactor(Count, topic=f"{name}.in", state=0)
    def count(intent: Count, ctx: Context, total: int) -> tuple[int, None]:
        return total + 1, None

    return topo, "count"


def _actor(name: str) -> tuple[Topology, str]:
    topo = _topology(name)

    @actor(topo, Count, state=0, topic=f"{name}.in")
    def counter(message: Count, ctx: Context, total: int) -> tuple[int, None]:
        return total + 1, None

    return topo, "counter"


def _asking(name: str) -> tuple[Topology, str]:
    topo = _topology(name)

    @actor(topo, Count | Pong | AskTimedOut, state=0, topic=f"{name}.in")
    def asker(message: Count | Pong | AskTimedOut, ctx: Context, total: int):  # type: ignore[no-untyped-def]
        if isinstance(message, Count):
            return total, ask(Ping(key=message.key), timeout=60)
        return total + 1, None

    @actor(topo, Ping, state=0, topic=f"{name}.pings", emits=[Pong])
    def echo(message: Ping, ctx: Context, seen: int):  # type: ignore[no-untyped-def]
        return seen + 1, reply(Pong(key=message.key, seen=seen + 1))

    return topo, "asker"


async def timed(
    url: str, make: Callable[[str], tuple[Topology, str]], path: str, messages: int, done: int
) -> Row:
    """Produce ``messages`` Counts, then run a worker until its agent or reactor has
    processed ``done`` messages."""
    topo, name = make(f"actorbench-{uuid.uuid4().hex[:8]}")
    async with Client(url, topo) as client:
        await client.send_many([(Count(key=f"k{i % KEYS}"), OPS) for i in range(messages)])
    began, cpu = time.perf_counter(), time.process_time()
    async with Worker(topo, url, poll_timeout=0.05) as worker:
        task = asyncio.create_task(worker.run())
        while worker.metrics.processed[name] < done:
            await asyncio.sleep(0.01)
        seconds, cpu_s = time.perf_counter() - began, time.process_time() - cpu
        worker.request_stop()
        await task
    return Row(path, messages, seconds, cpu_s / messages * 1e6)


async def asks_from_outside(url: str, asks: int) -> tuple[float, float, float]:
    """Sequential ``Client.ask`` round trips to an actor: per second, p50 and p99 ms."""
    topo = _topology(f"actorbench-{uuid.uuid4().hex[:8]}")

    @actor(topo, Count, state=0, topic=f"{topo.name}.in", emits=[Pong])
    def answer(message: Count, ctx: Context, seen: int):  # type: ignore[no-untyped-def]
        return seen + 1, reply(Pong(key=message.key, seen=seen + 1))

    took = []
    async with Worker(topo, url, poll_timeout=0.05) as worker:
        task = asyncio.create_task(worker.run())
        async with Client(url, topo) as client:
            await client.ask(Count(key="warm-up"), context=OPS, timeout=60)  # group joined
            began = time.perf_counter()
            for i in range(asks):
                t = time.perf_counter()
                await client.ask(Count(key=f"k{i % KEYS}"), context=OPS)
                took.append((time.perf_counter() - t) * 1000)
            seconds = time.perf_counter() - began
        worker.request_stop()
        await task
    took.sort()
    return asks / seconds, statistics.median(took), took[max(int(len(took) * 0.99) - 1, 0)]


async def migration(url: str, messages: int) -> None:
    """A second worker joins a worker whose actors hold state: how long until it holds its
    partitions (state restored), and each partition's restore (packetflow_restore_seconds)."""
    topo, name = _actor(f"actorbench-{uuid.uuid4().hex[:8]}")
    async with Client(url, topo) as client:
        await client.send_many([(Count(key=f"k{i % KEYS}"), OPS) for i in range(messages)])
    async with Worker(topo, url, poll_timeout=0.05) as first:
        running = [asyncio.create_task(first.run())]
        while first.metrics.processed[name] < messages:
            await asyncio.sleep(0.01)
        began = time.perf_counter()
        async with Worker(topo, url, poll_timeout=0.05) as second:
            running.append(asyncio.create_task(second.run()))
            while not second.assignment or len(first.assignment) == 4:
                await asyncio.sleep(0.01)
            await second.wait_idle(60)
            moved = time.perf_counter() - began
            took = second.metrics.snapshot().get("restore_seconds", {})
            restored = second.metrics.restored[name]
            second.request_stop()
            first.request_stop()
            await asyncio.gather(*running)
    # the actor type's stores (state, supervision, asks, reminders, timers): a changelog
    # each, restored one after another: a partition's restore is their sum
    per: dict[str, float] = {}
    for changelog_partition, seconds in took.items():
        p = changelog_partition.rsplit("[", 1)[1].rstrip("]")
        per[p] = per.get(p, 0.0) + seconds
    parts = ", ".join(f"{p}: {s:.3f} s" for p, s in sorted(per.items()))
    print(f"migration: a second worker joined and held {len(per)} of 4 partitions, restored, "
          f"{moved:.1f} s after it started; {restored:,} changelog records restored; "
          f"restore per partition: {parts}")  # fmt: skip


async def run(url: str, messages: int, asks: int) -> list[Row]:
    rows = [
        await timed(url, _reactor, "reactor (stateful, per key)", messages, messages),
        await timed(url, _actor, "actor tell (same work)", messages, messages),
        # each Count: the asker's turn, the echo's, and the answer's turn at the asker
        await timed(url, _asking, "actor ask inside (round trip)", messages, 2 * messages),
    ]
    rate, p50, p99 = await asks_from_outside(url, asks)
    print(f"{'path':34} {'messages':>9} {'msgs/s':>9} {'vs reactor':>10} {'CPU µs/msg':>10}")
    base = rows[0].rate
    for row in rows:
        print(
            f"{row.path:34} {row.messages:>9,} {row.rate:>9,.0f} {row.rate / base:>10.2f} "
            f"{row.cpu_us:>10.1f}"
        )
    print(f"asks from outside (Client.ask, one at a time): {asks:,} at {rate:,.0f}/s, "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms")  # fmt: skip
    await migration(url, messages)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--asks", type=int, default=500)
    parser.add_argument("--bootstrap", help="host:port (default $PACKETFLOW_TEST_BOOTSTRAP)")
    args = parser.parse_args()
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    logging.getLogger("packetflow.security").setLevel(logging.ERROR)  # unsigned: said above
    found = brokers.find_or_start(args.bootstrap, print)
    url = f"kafka://{found.bootstrap}"
    try:
        asyncio.run(run(url, args.messages, args.asks))
    finally:
        found.stop_if_ours()


if __name__ == "__main__":
    main()
