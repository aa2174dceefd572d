"""A steady offered load, from its own process: deposits at a fixed rate for a fixed time.

Each record is stamped with ``sent_us`` (wall clock, microseconds) as it is handed to the
producer; the harness subtracts it from the time it sees the matching output. Values and
contexts are pre-encoded with PacketFlow's codec for a pool of deposits (so producing stays
cheap at high rates); only the ``sent_us`` digits are written at send time, which gives the
same bytes the codec would. Every 2 ms the records due by then go out as one batch per
partition (keyed by account, partitioned like any Kafka producer). Used for W1 and W2 only
(W3 has no latency run): the deposits' ``event_time`` is fixed per pool entry and unused.

Prints one JSON line when done: how many it sent, at what rate, and what they add up to.

    python -m benchmarks.loadgen --bootstrap 127.0.0.1:9092 --topic T --rate 20000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaProducer

from benchmarks.config import PRODUCER
from benchmarks.intents import encode_deposit
from benchmarks.produce import Batches, Expected, deposits, event_times, partition_of

TICK = 0.002
POOL = 20_000
MARK = b'"sent_us":'


@dataclass(frozen=True, slots=True)
class Template:
    key: bytes
    partition: int
    prefix: bytes  # the value up to and including '"sent_us":'
    headers: list[tuple[str, bytes]]
    account: str
    amount: int
    event_time: float


def templates(count: int, accounts: int, seed: int) -> list[Template]:
    out = []
    times = event_times(count, seed)
    for (account, amount), event_time in zip(deposits(count, accounts, seed), times, strict=True):
        value, headers = encode_deposit(account, amount, 0, event_time)
        cut = value.rindex(MARK) + len(MARK)
        if value[cut:] != b"0}":
            raise RuntimeError(f"unexpected encoding of a Deposit: {value!r}")
        key = account.encode()
        out.append(
            Template(key, partition_of(key), value[:cut], headers, account, amount, event_time)
        )
    return out


async def run(
    bootstrap: str, topic: str, rate: float, seconds: float, accounts: int, seed: int
) -> dict[str, object]:
    total = int(rate * seconds)
    pool = templates(min(total, POOL), accounts, seed)
    expected = Expected()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, client_id="bench-load", **PRODUCER)
    await producer.start()
    try:
        batches = Batches(producer, topic)
        sent = 0
        started_us = int(time.time() * 1e6)
        start = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - start) * rate))
            for i in range(sent, due):
                t = pool[i % len(pool)]
                value = t.prefix + b"%d}" % int(time.time() * 1e6)
                await batches.add(t.partition, t.key, value, t.headers)
                expected.add(t.account, t.amount)
            sent = max(sent, due)
            await batches.flush()
            await asyncio.sleep(TICK)
        elapsed = time.monotonic() - start
        await batches.acknowledged()
    finally:
        await producer.stop()
    return {
        "count": expected.count,
        "amount_sum": expected.amount_sum,
        "balances": expected.balances,
        "rate": expected.count / elapsed if elapsed > 0 else 0.0,
        "started_us": started_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--rate", type=float, required=True, help="records per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    summary = asyncio.run(
        run(args.bootstrap, args.topic, args.rate, args.seconds, args.accounts, args.seed)
    )
    sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")


if __name__ == "__main__":
    main()
