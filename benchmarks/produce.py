"""The input: deposits keyed by account, in PacketFlow's wire format, and what they must add up to.

Each workload's input topic is produced once, before any contestant runs, so all three read
identical bytes. Every record is encoded by ``packetflow.engine.codec.encode`` with its own
root context (``Context.new("bench", ["teller:account/*"])``: a fresh intent id and trace
per deposit, as real senders produce them). Every deposit carries a fixed ``event_time``
(see ``config.EVENT_EPOCH``); W3's input ends with one end-of-input marker per partition
(``config.END_OF_INPUT_TIME``), and its :class:`Expected` holds every window's count and sum.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from benchmarks.config import (
    DISORDER_MS,
    END_OF_INPUT_TIME,
    EVENT_EPOCH,
    EVENTS_PER_SECOND,
    PARTITIONS,
    PRODUCER,
)
from benchmarks.contestants.common import window_start_ms
from benchmarks.intents import encode_deposit

MAX_AMOUNT = 1000
MARKER_AMOUNT = 1

Window = tuple[str, int]  # (account, window start in epoch seconds)


@dataclass
class Expected:
    """What a correct contestant's output adds up to.

    With ``windowed`` (W3) it also holds each (account, window)'s [count, sum]: ``windows``
    those that must close (one result each), ``open_windows`` the end-of-input markers',
    which never close (no result; faust's table holds them, so its check counts them).
    """

    count: int = 0  # deposits (the end-of-input markers not included)
    amount_sum: int = 0
    balances: dict[str, int] = field(default_factory=dict)  # account -> final balance
    windowed: bool = False
    windows: dict[Window, list[int]] = field(default_factory=dict)
    open_windows: dict[Window, list[int]] = field(default_factory=dict)

    def add(self, account: str, amount: int, event_time: float | None = None) -> None:
        self.count += 1
        self.amount_sum += amount
        self.balances[account] = self.balances.get(account, 0) + amount
        if self.windowed and event_time is not None:
            _fold(self.windows, account, amount, event_time)

    def add_marker(self, account: str, event_time: float) -> None:
        _fold(self.open_windows, account, MARKER_AMOUNT, event_time)

    @property
    def outputs(self) -> int:
        """How many output records a correct contestant writes."""
        return len(self.windows) if self.windowed else self.count

    @property
    def inputs(self) -> int:
        """Input records, the end-of-input markers included."""
        return self.count + sum(c for c, _ in self.open_windows.values())


def _fold(windows: dict[Window, list[int]], account: str, amount: int, event_time: float) -> None:
    key = (account, window_start_ms(event_time) // 1000)
    slot = windows.get(key)
    if slot is None:
        windows[key] = [1, amount]
    else:
        slot[0] += 1
        slot[1] += amount


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


def event_times(records: int, seed: int) -> Iterator[float]:
    """The i-th record's event time (epoch seconds, whole milliseconds): ``EVENT_EPOCH`` plus
    i / ``EVENTS_PER_SECOND``, less up to ``DISORDER_MS`` at random, so a little out of order."""
    rng = random.Random(seed + 1_000_003)
    base_ms = EVENT_EPOCH * 1000
    for i in range(records):
        yield (base_ms + i * 1000 // EVENTS_PER_SECOND - rng.randrange(DISORDER_MS + 1)) / 1000


def end_marker_accounts() -> list[str]:
    """One account per partition (in partition order) for the end-of-input markers."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < PARTITIONS:
        name = f"end-of-input-{i}"
        found.setdefault(partition_of(name.encode()), name)
        i += 1
    return [found[p] for p in range(PARTITIONS)]


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
    *,
    seed: int = 0,
    windowed: bool = False,
) -> Expected:
    """Produce every deposit to ``topic`` (acknowledged) and return the expected totals.

    ``windowed`` (W3): count every (account, window), and end each partition with its
    end-of-input marker, after every deposit has been acknowledged.
    """
    expected = Expected(windowed=windowed)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench-input", **PRODUCER)
    await producer.start()
    try:
        batches = Batches(producer, topic)
        for (account, amount), event_time in zip(pairs, event_times(total, seed), strict=False):
            value, headers = encode_deposit(account, amount, int(time.time() * 1e6), event_time)
            key = account.encode()
            await batches.add(partition_of(key), key, value, headers)
            expected.add(account, amount, event_time)
            if expected.count % 20_000 == 0:
                await batches.flush()
                await batches.acknowledged()
                on_progress(expected.count)
        await batches.flush()
        await batches.acknowledged()
        if windowed:
            for partition, account in enumerate(end_marker_accounts()):
                value, headers = encode_deposit(
                    account, MARKER_AMOUNT, int(time.time() * 1e6), END_OF_INPUT_TIME
                )
                await batches.add(partition, account.encode(), value, headers)
                expected.add_marker(account, END_OF_INPUT_TIME)
            await batches.flush()
            await batches.acknowledged()
        on_progress(expected.count)
    finally:
        await producer.stop()
    if expected.count != total:
        raise RuntimeError(f"produced {expected.count} records, wanted {total}")
    return expected
