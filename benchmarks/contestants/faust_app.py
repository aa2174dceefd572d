"""The peer: the workload as a faust-streaming agent, W2's balances in a faust Table, W3's
windows in a faust tumbling-window Table.

The agent reads raw bytes with their headers (``stream.events()``), does the same per-record
work as the raw contestant (``contestants.common``) and ``await``s ``topic.send`` for each
output, which is how faust apps produce. W2 keeps the balance in a ``Table`` on the memory
store; faust writes the table's changelog itself. Producer and consumer settings are the
shared ones (``benchmarks.config``). Two of them faust does not expose, so this module sets
them on faust's aiokafka clients: idempotence (faust turns it on only in exactly-once mode)
and ``fetch_max_wait_ms`` (faust fixes it at 1500, aiokafka's default that the others use is
500; at 1500 faust's W2 latency sat near 1.5 s at a load it handled easily).

W3 is faust's own windowing: ``app.Table("windows").tumbling(10, expires=2)`` keyed by
account, relative to each deposit's ``event_time`` (``relative_to`` with a function of the
event: the agent validates the raw bytes with pydantic, so there is no faust Record field for
``relative_to_field``; the effect is the same), holding ``[count, sum, last deposit's context,
its capabilities]`` per (account, window); results go out from the table's
``on_window_close`` callback (a plain function using ``send_soon``: see ``close_window``).
That is as far as faust goes, and it is not what the other two do, for two reasons in
faust 0.15 (``faust/tables/base.py``, ``Collection._del_old_keys``):

- faust closes windows on the wall clock, not on event time: every ``table_cleanup_interval``
  (set to 1 s here; faust's default is 30 s) it pops, partition by partition, each window
  whose end is at or before the start of the window holding ``time.time() - expires``.
  There is no watermark. These event times are fixed in the past, so every window is stale
  as soon as it gets a deposit: each cleanup closes every window seen so far, partly
  filled, and the deposits that follow for it start it again from the table's default;
- a window is only handed to ``on_window_close`` if its start is after ``last_closed_window``,
  the newest start ever closed, one value for the whole table, across partitions (see
  faust-streaming/faust#137). Every other closed window, including a re-started one and the
  same window of the partitions cleaned later in the same pass, is dropped without a call.

So faust cannot emit one result per (account, window) on event time. The harness therefore
times faust's W3 to the point where every deposit has been folded into its window (the
table's changelog, which faust writes on every update, holds one record per input record),
then checks what can be checked (``verify.verify_faust_windows``): the changelog shows every
deposit added once to its window (the pieces faust's expiry cut a window into add up to its
count and sum), and every result the callback emitted is one of those pieces.

Run by the harness: ``python -m benchmarks.contestants.faust_app worker -l warn``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterable, Mapping
from typing import Any

import faust
import orjson
from faust.transport.drivers import aiokafka as faust_aiokafka

from benchmarks.config import (
    CONSUMER,
    FAUST_CLEANUP_INTERVAL,
    GRACE_SECONDS,
    MAX_BATCH,
    PARTITIONS,
    PRODUCER,
    WINDOW_SECONDS,
)
from benchmarks.contestants.common import (
    FAUST_WINDOWS_TABLE,
    CapabilityCheck,
    ContestantEnv,
    FirstRecord,
    Rejected,
    accepted,
    balance_changed,
    derived_headers,
    output_headers,
    read_input,
    window_total,
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
    table_cleanup_interval=FAUST_CLEANUP_INTERVAL,  # W3: how often faust expires windows
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


class EventTime:
    """The event time of the deposit being processed, for the windowed table."""

    now = 0.0


def event_time(_event: Any) -> float:
    return EventTime.now


def close_window(key: Any, value: Any) -> None:
    """faust's on_window_close: one (account, window) result (see the module's docstring).

    Synchronous, producing through faust's send buffer (``send_soon``, as faust writes its
    changelogs): an ``async`` callback that awaits ``send`` lets the agent add a partition to
    the dict faust's cleanup is iterating over, and faust's table service then crashes with
    "dictionary changed size during iteration" (seen on a loaded machine).
    """
    account, (start, _end) = key
    if not value:
        return
    count, total, context, capabilities = value
    sink.send_soon(
        key=account.encode(),
        value=window_total(account, int(start) * 1000, count, total),
        headers=derived_headers(
            env.workload,
            orjson.loads(context),
            None if capabilities is None else capabilities.encode(),
            HOP,
        ),
    )


windows = (
    app.Table(
        FAUST_WINDOWS_TABLE,
        default=list,
        partitions=PARTITIONS,
        on_window_close=close_window,
    )
    .tumbling(WINDOW_SECONDS, expires=GRACE_SECONDS)
    .relative_to(event_time)
    if env.workload == "W3"
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
        if windows is not None:
            EventTime.now = deposit.event_time
            acc = windows[deposit.account].value()
            count, total = (acc[0] + 1, acc[1] + deposit.amount) if acc else (1, deposit.amount)
            caps = source.capabilities
            windows[deposit.account] = [
                count,
                total,
                source.context_raw.decode(),
                None if caps is None else caps.decode(),
            ]
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
