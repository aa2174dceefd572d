"""The ceiling: the workload written by hand on aiokafka, as a tight ``getmany`` loop.

Per batch: validate and authorise each record, queue one output per record (and, for W2,
one changelog record per account changed in the batch, on the input's partition of a
compacted topic this process creates), await every send future, then commit. At least
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
            futures = []
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
                    futures.append(
                        await producer.send(
                            env.output,
                            value,
                            key=m.key,
                            headers=output_headers(env.workload, source, HOP),
                        )
                    )
                for key, balance in changed.items():
                    futures.append(
                        await producer.send(
                            changelog, b"%d" % balance, key=key, partition=tp.partition
                        )
                    )
            await asyncio.gather(*futures)
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
