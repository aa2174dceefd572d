"""A broker that fails a batch is no record's fault: the worker says so once, rewinds to its
last commit and tries again, and says when it resumed. Nothing is dead-lettered for it.

The broker's failures are injected into ``memory://`` (a producer whose flush or commit
fails the first times); tests/processes/test_broker.py stops a real broker.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import pytest
from support.running import new_topology, unique

from packetflow import Client, Context, Intent, Worker
from packetflow.engine.transport import BrokerError, Producer
from packetflow.engine.transport.memory import MemoryBroker, MemoryProducer, MemoryTransport

WAIT = 10.0


class Item(Intent, type_name="rewind.Item", key="key"):
    key: str
    seq: int


class Seen(Intent, type_name="rewind.Seen", key="key"):
    key: str
    seq: int
    count: int


class FlakyProducer(MemoryProducer):
    """Fails its first ``fails`` flushes (at-least-once) or commits (exactly-once)."""

    def __init__(self, broker: MemoryBroker, transactional_id: str | None, fails: int) -> None:
        super().__init__(broker, transactional_id)
        self.fails = fails

    def _maybe_fail(self) -> None:
        if self.fails > 0:
            self.fails -= 1
            raise BrokerError("injected: the broker did not acknowledge the batch")

    async def flush(self) -> None:
        self._maybe_fail()
        await super().flush()

    async def commit(self) -> None:
        if self._in_txn:
            self._maybe_fail()
        await super().commit()


class FlakyTransport(MemoryTransport):
    """Its producers fail their first ``fails`` batches; with ``rewind_fails``, the broker
    is still down for that many rewinds after each failed batch (reading the committed
    offsets fails)."""

    def __init__(self, fails: int, rewind_fails: int = 0) -> None:
        super().__init__("memory://flaky", broker=MemoryBroker())
        self.fails = fails
        self.rewind_fails = rewind_fails
        self.down = 0  # rewinds still to fail
        self.unrewound = False  # a batch failed and no rewind has read the commits since
        self.fetched_unrewound = 0  # fetches made meanwhile: batches on top of leftovers

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        transport = self

        class Producer_(FlakyProducer):
            def _maybe_fail(self) -> None:
                try:
                    super()._maybe_fail()
                except BrokerError:
                    transport.down = transport.rewind_fails
                    transport.unrewound = True
                    raise

        return Producer_(self.broker, transactional_id, self.fails)

    def consumer(self, *args: Any, **kwargs: Any) -> Any:
        consumer = super().consumer(*args, **kwargs)
        real_committed, real_getmany = consumer.committed, consumer.getmany

        async def committed(partitions: Any) -> Any:
            if self.down > 0:
                self.down -= 1
                raise BrokerError("injected: still down, the committed offsets cannot be read")
            self.unrewound = False
            return await real_committed(partitions)

        async def getmany(*a: Any, **kw: Any) -> Any:
            self.fetched_unrewound += self.unrewound
            return await real_getmany(*a, **kw)

        consumer.committed = committed  # type: ignore[method-assign]
        consumer.getmany = getmany  # type: ignore[method-assign]
        return consumer


@pytest.mark.parametrize("rewind_fails", [0, 1], ids=["rewound", "rewind-fails-too"])
@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_failed_batch_is_rewound_and_retried_not_dead_lettered(
    guarantee: str, rewind_fails: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Also when the rewind itself fails (the broker still down): no batch goes on top of
    the failed one's leftovers, so nothing it consumed is skipped or counted twice."""
    topo = new_topology("rewind", processing_guarantee=guarantee)
    source, seen = unique("items"), unique("seen")
    topo.route(Seen, seen)

    @topo.reactor(Item, topic=source, state=0, public=True)
    def count(intent: Item, ctx: Context, state: int) -> tuple[int, Seen]:
        return state + 1, Seen(key=intent.key, seq=intent.seq, count=state + 1)

    fails = 1 if rewind_fails else 2  # then one failed batch, and a failed rewind after it
    transport = FlakyTransport(fails=fails, rewind_fails=rewind_fails)
    caplog.set_level(logging.INFO, "packetflow")
    async with Client(transport, topo) as client:
        await client.send_many([(Item(key="k", seq=n), None) for n in range(20)])
        async with Worker(topo, transport, poll_timeout=0.01) as worker:
            task = asyncio.create_task(worker.run())
            try:
                await worker.wait_idle(WAIT, settle=0.1)
            finally:
                worker.request_stop()
                await asyncio.wait_for(task, WAIT)
            state = worker.state("count", "k")
        outputs = [r.intent for r in await client.read(seen)]
        dead = await client.read(topo.dead_letter_topic)
    assert dead == []  # the broker's failure is nobody's record's
    seqs = Counter(o.seq for o in outputs)  # type: ignore[union-attr]
    assert set(seqs) == set(range(20))  # every item processed
    if guarantee == "exactly_once":  # the aborted attempts left nothing visible
        assert all(n == 1 for n in seqs.values()) and state == 20
    else:  # at least once: what was repeated is counted again, consistently
        assert state == len(outputs) >= 20
    assert transport.fetched_unrewound == 0  # no batch before the rewind held
    assert worker.metrics.broker_retries == fails * (1 + rewind_fails)
    said = [r.getMessage() for r in caplog.records if r.name == "packetflow.worker"]
    assert sum("unreachable" in m for m in said) == 1, said  # once, not per retry
    assert sum("reachable again: resumed after" in m for m in said) == 1, said


class UnrestorableTransport(MemoryTransport):
    """A broker whose changelogs cannot be read (a topic deleted, an ACL missing)."""

    def __init__(self) -> None:
        super().__init__("memory://unrestorable", broker=MemoryBroker())

    async def read_partitions(self, partitions: Any, on_record: Any, **_: Any) -> int:
        raise BrokerError("injected: the changelog cannot be read")


async def test_a_partition_whose_state_cannot_be_restored_stops_the_worker() -> None:
    """Never processed without its state, and not held idle either: the worker stops, so
    its partitions go to another (or to it again, once restarted)."""
    topo = new_topology("unrestorable")

    @topo.reactor(Item, topic=unique("items"), state=0, public=True)
    def count(intent: Item, ctx: Context, state: int) -> tuple[int, None]:
        return state + 1, None

    async with Worker(topo, UnrestorableTransport(), poll_timeout=0.01) as worker:
        with pytest.raises(RuntimeError, match="cannot go on: injected: the changelog"):
            await asyncio.wait_for(worker.run(), WAIT)
        assert worker.assignment == set()
