"""Workers and clients as named states (new, starting, running, stopping, stopped): a second
start is refused, stop is idempotent, and a start that fails closes whatever it had opened,
in reverse order, before the error leaves ``start``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from packetflow import Client, Context, Intent, Topology, Worker
from packetflow.engine.runtime.lifecycle import State
from packetflow.engine.transport import BrokerError, Follower, Producer, Record
from packetflow.engine.transport.memory import MemoryBroker, MemoryTransport
from packetflow.streams import table


class Ping(Intent, type_name="life.Ping", key="key"):
    key: str


class Limit(Intent, type_name="life.Limit", key="account"):
    account: str
    amount: int


def topology(*, with_table: bool = False) -> Topology:
    topo = Topology("life", namespace="", partitions=2)

    @topo.reactor(Ping, topic="pings", public=True)
    def pong(intent: Ping, ctx: Context) -> None:
        return None

    if with_table:
        table(topo, Limit, scope="global", public=True)  # read whole while starting
    return topo


async def test_a_second_start_is_refused_and_stop_is_idempotent() -> None:
    worker = Worker(topology(), MemoryTransport("memory://life", broker=MemoryBroker()))
    assert worker.lifecycle is State.NEW
    await worker.start()
    assert worker.lifecycle is State.RUNNING
    with pytest.raises(RuntimeError, match="Worker cannot start: it is running"):
        await worker.start()
    await worker.stop()
    assert worker.lifecycle is State.STOPPED
    await worker.stop()  # again: nothing happens
    with pytest.raises(RuntimeError, match="a stopped one is not restarted: make a new one"):
        await worker.start()


async def test_a_client_has_the_same_lifecycle() -> None:
    client = Client(MemoryTransport("memory://life", broker=MemoryBroker()), topology())
    await client.stop()  # never started: just stopped
    assert client.lifecycle is State.STOPPED
    with pytest.raises(RuntimeError, match="Client cannot start: it is stopped"):
        await client.start()


async def test_a_broker_that_refuses_connections_fails_the_start_and_leaves_nothing_open() -> None:
    worker = Worker(topology(), "kafka://127.0.0.1:1")
    before = asyncio.all_tasks()
    with pytest.raises(BrokerError, match=r"connecting to kafka://127\.0\.0\.1:1"):
        await asyncio.wait_for(worker.start(), 30)
    assert worker.lifecycle is State.STOPPED
    assert asyncio.all_tasks() == before  # no background task left behind
    await worker.stop()  # idempotent after a failed start too


class Counting(MemoryTransport):
    """A memory broker that counts what is opened and closed, and whose table topic cannot
    be read (a restore that fails while the worker starts)."""

    def __init__(self) -> None:
        super().__init__("memory://counting", broker=MemoryBroker())
        self.open: dict[str, int] = {"transport": 0, "producer": 0, "follower": 0}

    async def start(self) -> None:
        await super().start()
        self.open["transport"] += 1

    async def stop(self) -> None:
        self.open["transport"] -= 1
        await super().stop()

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        return _CountedProducer(super().producer(transactional_id=transactional_id), self.open)

    def follow(self, topic: str, partitions: int, **kw: Any) -> Follower:
        return _CountedFollower(topic, super().follow(topic, partitions, **kw), self.open)


class _CountedProducer:
    def __init__(self, inner: Producer, open: dict[str, int]) -> None:
        self._inner, self._open = inner, open

    async def start(self) -> None:
        await self._inner.start()
        self._open["producer"] += 1

    async def stop(self) -> None:
        self._open["producer"] -= 1
        await self._inner.stop()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _CountedFollower:
    def __init__(self, topic: str, inner: Follower, open: dict[str, int]) -> None:
        self._topic, self._inner, self._open = topic, inner, open

    async def start(self) -> None:
        await self._inner.start()
        self._open["follower"] += 1

    async def stop(self) -> None:
        self._open["follower"] -= 1
        await self._inner.stop()

    async def catch_up(self) -> list[Record]:
        if "limit" in self._topic.lower():
            raise BrokerError(f"injected: {self._topic} cannot be read")
        return await self._inner.catch_up()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def test_a_restore_that_fails_during_start_closes_everything_it_opened() -> None:
    transport = Counting()
    worker = Worker(topology(with_table=True), transport)
    with pytest.raises(BrokerError, match=r"injected: .* cannot be read"):
        await worker.start()
    assert worker.lifecycle is State.STOPPED
    # the transport, the producer and the revocations follower were open by then: all closed
    assert transport.open == {"transport": 0, "producer": 0, "follower": 0}
    assert worker.topology.group_id not in transport.broker.groups  # it never joined
