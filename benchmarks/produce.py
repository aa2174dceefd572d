"""The input: deposits keyed by account, in PacketFlow's wire format, and what they must add up to.

Each workload's input topic is produced once, before any contestant runs, so all three read
identical bytes. Every record is encoded by ``packetflow.engine.codec.encode`` with its own
root context (``Context.new("bench", ["teller:account/*"])``: a fresh intent id and trace
per deposit, as real senders produce them).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from benchmarks.config import PARTITIONS, PRODUCER
from benchmarks.intents import encode_deposit

MAX_AMOUNT = 1000


@dataclass
class Expected:
    """What a correct contestant's output adds up to."""

    count: int = 0
    amount_sum: int = 0
    balances: dict[str, int] = field(default_factory=dict)  # account -> final balance

    def add(self, account: str, amount: int) -> None:
        self.count += 1
        self.amount_sum += amount
        self.balances[account] = self.balances.get(account, 0) + amount


def account_name(i: int) -> str:
    return f"acct-{i:07d}"


def deposits(
    records: int, accounts: int, seed: int, *, distinct: bool = False
) -> Iterator[tuple[str, int]]:
    """(account, amount) pairs: random accounts, or each account once when ``distinct``."""
    rng = random.Random(seed)
    for i in range(records):
        account = i if distinct else rng.randrange(accounts)
        yield account_name(account), rng.randint(1, MAX_AMOUNT)


class Batches:
    """Records go out as one batch per partition, built by hand (cheaper than ``send``).

    The partition is the one Kafka's default partitioner picks for the key, so records land
    where any Kafka producer would have put them.
    """

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic
        self.futures: list[asyncio.Future[object]] = []
        self._open = [producer.create_batch() for _ in range(PARTITIONS)]

    async def add(
        self, partition: int, key: bytes, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        batch = self._open[partition]
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            await self._send(partition)
            self._open[partition].append(key=key, value=value, timestamp=None, headers=headers)

    async def _send(self, partition: int) -> None:
        batch = self._open[partition]
        batch.close()
        self.futures.append(await self.producer.send_batch(batch, self.topic, partition=partition))
        self._open[partition] = self.producer.create_batch()

    async def flush(self) -> None:
        """Send every partition's open batch."""
        for partition, batch in enumerate(self._open):
            if batch.record_count():
                await self._send(partition)

    async def acknowledged(self) -> None:
        """Until the broker acknowledged everything sent so far."""
        await asyncio.gather(*self.futures)
        self.futures.clear()


_PARTITIONER = DefaultPartitioner()
_ALL = list(range(PARTITIONS))


def partition_of(key: bytes) -> int:
    """The partition Kafka's default (murmur2) partitioner gives ``key``."""
    return int(_PARTITIONER(key, _ALL, _ALL))


async def produce(
    bootstrap: str,
    topic: str,
    pairs: Iterator[tuple[str, int]],
    total: int,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> Expected:
    """Produce every deposit to ``topic`` (acknowledged) and return the expected totals."""
    expected = Expected()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench-input", **PRODUCER)
    await producer.start()
    try:
        batches = Batches(producer, topic)
        for account, amount in pairs:
            value, headers = encode_deposit(account, amount, int(time.time() * 1e6))
            key = account.encode()
            await batches.add(partition_of(key), key, value, headers)
            expected.add(account, amount)
            if expected.count % 20_000 == 0:
                await batches.flush()
                await batches.acknowledged()
                on_progress(expected.count)
        await batches.flush()
        await batches.acknowledged()
        on_progress(expected.count)
    finally:
        await producer.stop()
    if expected.count != total:
        raise RuntimeError(f"produced {expected.count} records, wanted {total}")
    return expected
