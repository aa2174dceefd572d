"""The engine teams pick instead: the workload as a Quix Streams application (3.28).

Written the way a Quix user writes it: the input topic with Quix's JSON value deserializer
(orjson), the deposit validated with pydantic, the same capability check and derived
context as the other hand-written contestant (``contestants.common``), the output headers
set with ``set_headers`` and the value produced with ``to_topic``. W2 keeps the balance
with a stateful ``apply`` on Quix's default store (RocksDB, with its changelog topic). W3
is Quix's own ``tumbling_window(10 s, grace 2 s).agg(count, sum, last)`` on the deposit's
``event_time`` (a ``timestamp_extractor``), emitted with ``final(closing_strategy=
"partition")``: a partition's windows close when its newest event time passes their end
plus grace, the rule the other contestants follow (Quix's default, ``"key"``, closes a
key's window only when that key sees a newer record, so the end-of-input markers would not
close them). The window keeps its last deposit's context in the ``Last()`` aggregate.
One concession to Quix: when a partition's newest event time jumps, it lists every window
end between the last window it closed and the new one (``windows_to_expire`` in its
RocksDB window transaction), so the end-of-input marker's time (2100) would have it build a
list of some 240 million window ends per partition and stall. Its timestamp extractor
therefore reads the marker as one day after the input's first event instead: still past
every real window's end plus grace, so every window closes as in the other contestants.

Producer and consumer settings are the shared ones (``benchmarks.config``) in librdkafka's
names. At least once, Quix's default, committing every 5 s (Quix's default) and at stop.

Quix Streams pins versions the engine does not use (pydantic, confluent-kafka), so it runs
from its own virtual environment, ``.venv-quix`` (``make bench`` creates it); it imports
nothing of PacketFlow. Run by the harness: ``.venv-quix/bin/python -m
benchmarks.contestants.quix_app`` with ``BENCH_*`` variables.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import orjson
from pydantic import ValidationError
from quixstreams import Application, State
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.dataframe.windows import Count, Last, Sum

from benchmarks.config import (
    CONSUMER,
    END_OF_INPUT_TIME,
    EVENT_EPOCH,
    GRACE_SECONDS,
    PRODUCER,
    WINDOW_SECONDS,
)
from benchmarks.contestants.common import (
    CapabilityCheck,
    ContestantEnv,
    FirstRecord,
    Input,
    Rejected,
    accepted,
    balance_changed,
    derived_headers,
    output_headers,
    read_input,
    window_total,
)

HOP = "quix"

PRODUCER_CONFIG = {
    "acks": PRODUCER["acks"],
    "linger.ms": PRODUCER["linger_ms"],
    "batch.size": PRODUCER["max_batch_size"],
    "enable.idempotence": PRODUCER["enable_idempotence"],
}
CONSUMER_CONFIG = {
    "max.partition.fetch.bytes": CONSUMER["max_partition_fetch_bytes"],
    "fetch.wait.max.ms": CONSUMER["fetch_max_wait_ms"],
    "session.timeout.ms": CONSUMER["session_timeout_ms"],
    "heartbeat.interval.ms": CONSUMER["heartbeat_interval_ms"],
}


class Steps:
    """The per-record work, as Quix callbacks."""

    def __init__(self, env: ContestantEnv) -> None:
        self.workload = env.workload
        self.first = FirstRecord(env.marker)
        self.check = CapabilityCheck()
        self.rejected = 0

    def read(self, value: Any, key: Any, timestamp: int, headers: Any) -> Input | None:
        """The input checked: its type, its value (pydantic), its context, its capability."""
        if self.first.pending:
            self.first.mark()
        try:
            source = read_input(headers, value)
            if not self.check.allows(source.capabilities, source.deposit.account):
                raise Rejected("missing deposit capability")
            return source
        except (Rejected, ValueError, ValidationError):
            self.rejected += 1  # the other contestants dead-letter / deny these
            return None

    def headers(self, value: Input, key: Any, timestamp: int, headers: Any) -> list:
        return output_headers(self.workload, value, HOP)

    @staticmethod
    def balance(source: Input, state: State) -> tuple[Input, int]:
        """W2: the account's running balance, in Quix's state store."""
        balance = state.get("balance", 0) + source.deposit.amount
        state.set("balance", balance)
        return source, balance

    @staticmethod
    def window_input(source: Input) -> dict[str, Any]:
        """W3: what a window aggregates (the context travels to the result in ``last``)."""
        caps = source.capabilities
        return {
            "amount": source.deposit.amount,
            "context": source.context_raw.decode(),
            "capabilities": None if caps is None else caps.decode(),
        }

    def window_headers(self, value: dict[str, Any], key: Any, ts: int, headers: Any) -> list:
        last = value["last"]
        caps = last["capabilities"]
        return derived_headers(
            "W3", orjson.loads(last["context"]), None if caps is None else caps.encode(), HOP
        )


QUIX_END_OF_INPUT_MS = (EVENT_EPOCH + 86_400) * 1000  # see the module's docstring


def event_time(value: Any, headers: Any, timestamp: int, timestamp_type: Any) -> int:
    """W3's timestamp: the deposit's ``event_time`` (epoch seconds), in ms."""
    try:
        seconds = value["event_time"]
    except (TypeError, KeyError):
        return timestamp
    if seconds == END_OF_INPUT_TIME:
        return QUIX_END_OF_INPUT_MS
    return int(seconds * 1000)


def build(env: ContestantEnv) -> tuple[Application, StreamingDataFrame, Steps]:
    workdir = os.environ.get("BENCH_WORKDIR", ".")
    app = Application(
        broker_address=env.bootstrap,
        consumer_group=env.group,
        auto_offset_reset="earliest",
        state_dir=os.path.join(workdir, f"{env.group}.quix-state"),
        producer_extra_config=PRODUCER_CONFIG,
        consumer_extra_config=CONSUMER_CONFIG,
        loglevel="WARNING",
    )
    windowed = env.workload == "W3"
    source = app.topic(
        env.input,
        key_deserializer="bytes",
        value_deserializer="json",
        timestamp_extractor=event_time if windowed else None,
    )
    sink = app.topic(env.output, key_serializer="bytes", value_serializer="bytes")
    steps = Steps(env)
    sdf = app.dataframe(source)
    sdf = sdf.apply(steps.read, metadata=True).filter(lambda s: s is not None)
    if env.workload == "W1":
        sdf = sdf.set_headers(steps.headers).apply(lambda s: accepted(s.deposit))
    elif env.workload == "W2":
        sdf = sdf.apply(steps.balance, stateful=True)
        sdf = sdf.set_headers(lambda v, k, t, h: steps.headers(v[0], k, t, h))
        sdf = sdf.apply(lambda v: balance_changed(v[0].deposit, v[1]))
    else:
        sdf = sdf.apply(steps.window_input)
        sdf = (
            sdf.tumbling_window(WINDOW_SECONDS * 1000, grace_ms=GRACE_SECONDS * 1000)
            .agg(count=Count(), total=Sum("amount"), last=Last())
            .final(closing_strategy="partition")
        )
        sdf = sdf.set_headers(steps.window_headers).apply(_window_value, metadata=True)
    sdf.to_topic(sink)
    return app, sdf, steps


def _window_value(w: dict[str, Any], key: bytes, timestamp: int, headers: Any) -> bytes:
    """W3's result: one closed window of one account (the message key)."""
    return window_total(key.decode(), w["start"], w["count"], w["total"])


def main() -> None:
    env = ContestantEnv.from_env()
    app, sdf, steps = build(env)
    app.run(sdf)
    if steps.rejected:
        print(f"quix: rejected {steps.rejected} records", file=sys.stderr)


if __name__ == "__main__":
    main()
