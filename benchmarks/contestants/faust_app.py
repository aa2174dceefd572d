"""The peer: the workload as a faust-streaming agent, W2's balances in a faust Table.

The agent reads raw bytes with their headers (``stream.events()``), does the same per-record
work as the raw contestant (``contestants.common``) and ``await``s ``topic.send`` for each
output, which is how faust apps produce. W2 keeps the balance in a ``Table`` on the memory
store; faust writes the table's changelog itself. Producer and consumer settings are the
shared ones (``benchmarks.config``). Two of them faust does not expose, so this module sets
them on faust's aiokafka clients: idempotence (faust turns it on only in exactly-once mode)
and ``fetch_max_wait_ms`` (faust fixes it at 1500, aiokafka's default that the others use is
500; at 1500 faust's W2 latency sat near 1.5 s at a load it handled easily).

Run by the harness: ``python -m benchmarks.contestants.faust_app worker -l warn``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterable, Mapping
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

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

HOP = "faust"
env = ContestantEnv.from_env()


def _idempotent(self: Any) -> Mapping[str, Any]:
    return {"enable_idempotence": PRODUCER["enable_idempotence"]}


faust_aiokafka.Producer._settings_extra = _idempotent  # type: ignore[method-assign]

_create_worker_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


def _same_fetch_wait(self: Any, transport: Any) -> Any:
    """faust fixes fetch_max_wait_ms at 1500; the others use aiokafka's default, 500."""
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = CONSUMER["fetch_max_wait_ms"]
    return consumer


faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _same_fetch_wait  # type: ignore[method-assign]

app = faust.App(
    env.group,
    broker=f"kafka://{env.bootstrap}",
    store="memory://",
    datadir=os.path.join(os.environ.get("BENCH_WORKDIR", "."), f"{env.group}-data"),
    web_enabled=False,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    producer_acks=-1,  # "all"
    producer_linger_ms=PRODUCER["linger_ms"],
    producer_max_batch_size=PRODUCER["max_batch_size"],
    broker_max_poll_records=MAX_BATCH,
    consumer_max_fetch_size=CONSUMER["max_partition_fetch_bytes"],
    consumer_auto_offset_reset=CONSUMER["auto_offset_reset"],
    broker_session_timeout=CONSUMER["session_timeout_ms"] / 1000,  # type: ignore[operator]
    broker_heartbeat_interval=CONSUMER["heartbeat_interval_ms"] / 1000,  # type: ignore[operator]
)

source = app.topic(
    env.input, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
sink = app.topic(
    env.output, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
)
balances = (
    app.Table("balances", default=int, partitions=PARTITIONS, key_type=str, value_type=int)
    if env.workload == "W2"
    else None
)

first = FirstRecord(env.marker)
check = CapabilityCheck()


@app.agent(source)
async def process(stream: AsyncIterable[Any]) -> None:
    workload = env.workload
    async for event in stream.events():  # type: ignore[attr-defined]
        if first.pending:
            first.mark()
        message = event.message
        try:
            source = read_input(message.headers, message.value)
            deposit = source.deposit
            if not check.allows(source.capabilities, deposit.account):
                raise Rejected("missing deposit capability")
        except (Rejected, ValueError) as exc:
            print(f"faust: rejected a record: {exc}", file=sys.stderr)
            continue
        if balances is not None:
            balance = balances[deposit.account] + deposit.amount
            balances[deposit.account] = balance
            value = balance_changed(deposit, balance)
        else:
            value = accepted(deposit)
        await sink.send(key=message.key, value=value, headers=output_headers(workload, source, HOP))


if __name__ == "__main__":
    app.main()
