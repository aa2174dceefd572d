"""The ceiling: the workload written by hand on aiokafka, as a tight ``getmany`` loop.

Per batch: validate and authorise each record, queue one output per record (and, for W2,
one changelog record per account changed in the batch, on the input's partition of a
compacted topic this process creates) into aiokafka record batches, ship them closed, await
their delivery, then commit. At least
once, like the other two. Its changelog is write-only: with one consumer and a fresh group
there is nothing to restore.

Run by the harness: ``python -m benchmarks.contestants.raw`` with ``BENCH_*`` variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import TopicPartition

from benchmarks.config import CONSUMER, MAX_BATCH, PARTITIONS, PRODUCER
from benchmarks.contestants.common import (
    CapabilityCheck,
    ContestantEnv,
    FirstRecord,
    Rejected,
    accepted,
    balance_changed,
    output_headers,
    read_input,
)

HOP = "raw"


def partition_of(key: bytes, cache: dict[bytes, int] = {}) -> int:  # noqa: B006 - a memo
    """Kafka's default partitioner (what ``producer.send`` would pick), memoised."""
    found = cache.get(key)
    if found is None:
        found = cache[key] = (murmur2(key) & 0x7FFFFFFF) % PARTITIONS
    return found


class Outputs:
    """One aiokafka record batch per output partition, shipped closed (no linger) per poll.

    aiokafka's batch API is the fastest way it offers to produce: no per-record ``send()``
    coroutine, and a closed batch goes to the broker at once.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer
        self.open: dict[tuple[str, int], BatchBuilder] = {}
        self.futures: list[asyncio.Future[object]] = []

    async def add(
        self, topic: str, partition: int, key: bytes, value: bytes, headers: list
    ) -> None:
        batch = self.open.get((topic, partition))
        if batch is None:
            batch = self.open[(topic, partition)] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
            await self.ship(topic, partition, batch)
            batch = self.open[(topic, partition)] = self.producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers)

    async def ship(self, topic: str, partition: int, batch: BatchBuilder) -> None:
        batch.close()
        self.futures.append(await self.producer.send_batch(batch, topic, partition=partition))

    async def acknowledged(self) -> None:
        for (topic, partition), batch in self.open.items():
            await self.ship(topic, partition, batch)
        self.open.clear()
        await asyncio.gather(*self.futures)


async def create_changelog(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(topic, PARTITIONS, 1, topic_configs={"cleanup.policy": "compact"})]
            )
    finally:
        await admin.close()


async def run(env: ContestantEnv) -> None:
    changelog = f"{env.group}.balances.changelog"
    stateful = env.workload == "W2"
    if stateful:
        await create_changelog(env.bootstrap, changelog)
    consumer = AIOKafkaConsumer(
        env.input, bootstrap_servers=env.bootstrap, group_id=env.group, client_id=HOP, **CONSUMER
    )
    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, client_id=HOP, **PRODUCER)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    first = FirstRecord(env.marker)
    check = CapabilityCheck()
    balances: dict[bytes, int] = {}
    rejected = 0
    await producer.start()
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=MAX_BATCH)
            if not batch:
                continue
            if first.pending:
                first.mark()
            outputs = Outputs(producer)
            for tp, messages in batch.items():
                changed: dict[bytes, int] = {}
                for m in messages:
                    try:
                        source = read_input(m.headers, m.value)
                        deposit = source.deposit
                        if not check.allows(source.capabilities, deposit.account):
                            raise Rejected("missing deposit capability")
                    except (Rejected, ValueError):
                        rejected += 1  # the other contestants dead-letter / deny these
                        continue
                    if stateful:
                        balance = balances.get(m.key, 0) + deposit.amount
                        balances[m.key] = changed[m.key] = balance
                        value = balance_changed(deposit, balance)
                    else:
                        value = accepted(deposit)
                    await outputs.add(
                        env.output,
                        partition_of(m.key),
                        m.key,
                        value,
                        output_headers(env.workload, source, HOP),
                    )
                for key, balance in changed.items():
                    await outputs.add(changelog, tp.partition, key, b"%d" % balance, [])
            await outputs.acknowledged()
            await consumer.commit(
                {
                    TopicPartition(tp.topic, tp.partition): ms[-1].offset + 1
                    for tp, ms in batch.items()
                }
            )
    finally:
        await consumer.stop()
        await producer.stop()
    if rejected:
        print(f"raw: rejected {rejected} records", file=sys.stderr)


def main() -> None:
    asyncio.run(run(ContestantEnv.from_env()))


if __name__ == "__main__":
    main()
