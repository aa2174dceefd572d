"""The ceiling: the workload written by hand on aiokafka, as a tight ``getmany`` loop.

Per batch: validate and authorise each record, queue one output per record (and, for W2,
one changelog record per account changed in the batch, on the input's partition of a
compacted topic this process creates) into aiokafka record batches, ship them closed, await
their delivery, then commit. At least
once, like the other two. Its changelog is write-only: with one consumer and a fresh group
there is nothing to restore.

W3 is dict windowing by hand: per input partition, the open windows by start (epoch ms),
then by account: ``[count, sum, last deposit's Input]``, and a watermark, the largest event
time seen on the partition. A deposit whose window has already closed (watermark >= its end +
grace) would be late: counted and dropped, like PacketFlow's late topic (this input has
none). After each batch, every window whose end + grace the watermark has reached is closed:
its ``WindowTotal`` goes out, with the context of its last deposit. The changelog gets one
record per (account, window) changed or closed in the batch (its state, or a tombstone) and
the partition's watermark. There is no flush at the end of input: the input's end-of-input
markers move the watermark past every window (see ``config.END_OF_INPUT_TIME``), so the
windows close by the same rule as the rest, as in the other two contestants.

``--lean`` (the ``raw-lean`` contestant) is the floor: the same loop, batches, state and
changelog, but each record only decoded with orjson (no pydantic, no type or capability
check, no context) and each output written with ``orjson.dumps`` and its ``pf-type`` header
alone. Nothing that serves users is done; it shows what the loop itself costs.

Run by the harness: ``python -m benchmarks.contestants.raw [--lean]`` with ``BENCH_*``
variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import ConsumerRecord, TopicPartition

from benchmarks.config import CONSUMER, GRACE_SECONDS, MAX_BATCH, PARTITIONS, PRODUCER
from benchmarks.contestants.common import (
    WINDOW_MS,
    CapabilityCheck,
    ContestantEnv,
    Deposit,
    FirstRecord,
    Input,
    Rejected,
    accepted,
    balance_changed,
    output_headers,
    read_input,
    window_total,
)
from benchmarks.wire import BALANCE_CHANGED, DEPOSIT_ACCEPTED, WINDOW_TOTAL

HOP = "raw"
OUT_TYPE = {"W1": DEPOSIT_ACCEPTED, "W2": BALANCE_CHANGED, "W3": WINDOW_TOTAL}


class Work:
    """The per-record work: what PacketFlow does, by hand (``contestants.common``)."""

    hop = HOP

    def __init__(self, workload: str) -> None:
        self.workload = workload
        self.check = CapabilityCheck()

    def read(self, m: ConsumerRecord) -> Input:
        """The input checked (type, value, context, capability); raises when refused."""
        source = read_input(m.headers, m.value)
        if not self.check.allows(source.capabilities, source.deposit.account):
            raise Rejected("missing deposit capability")
        return source

    def headers(self, source: Input) -> list:
        return output_headers(self.workload, source, self.hop)

    def accepted(self, deposit: Deposit) -> bytes:
        return accepted(deposit)

    def balance_changed(self, deposit: Deposit, balance: int) -> bytes:
        return balance_changed(deposit, balance)

    def window_total(self, account: str, start_ms: int, count: int, total: int) -> bytes:
        return window_total(account, start_ms, count, total)


class LeanDeposit(NamedTuple):
    account: str
    amount: int
    event_time: float
    sent_us: int


class LeanWork(Work):
    """The floor: decode, state, produce; no validation, no checks, no context."""

    hop = "raw-lean"

    def __init__(self, workload: str) -> None:
        super().__init__(workload)
        self._headers = [("pf-type", OUT_TYPE[workload].encode())]

    def read(self, m: ConsumerRecord) -> Input:
        d = orjson.loads(m.value)
        deposit = LeanDeposit(d["account"], d["amount"], d["event_time"], d["sent_us"])
        return Input(deposit, {}, None, b"")  # type: ignore[arg-type]

    def headers(self, source: Input) -> list:
        return self._headers

    def accepted(self, deposit: Deposit) -> bytes:
        return orjson.dumps(
            {"account": deposit.account, "amount": deposit.amount, "sent_us": deposit.sent_us}
        )

    def balance_changed(self, deposit: Deposit, balance: int) -> bytes:
        return orjson.dumps(
            {
                "account": deposit.account,
                "amount": deposit.amount,
                "balance": balance,
                "sent_us": deposit.sent_us,
            }
        )

    def window_total(self, account: str, start_ms: int, count: int, total: int) -> bytes:
        return orjson.dumps(
            {"account": account, "start": start_ms // 1000, "count": count, "total": total}
        )


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


GRACE_MS = int(GRACE_SECONDS * 1000)
NO_WATERMARK = -(2**62)
WATERMARK_KEY = b"watermark"


class Windows:
    """One input partition's open windows (W3)."""

    __slots__ = ("open", "watermark")

    def __init__(self) -> None:
        self.open: dict[int, dict[bytes, list]] = {}  # start ms -> key -> [count, sum, Input]
        self.watermark = NO_WATERMARK


def window_state(slot: list) -> bytes:
    """An open window's changelog value: count, sum and its last deposit's raw context."""
    source: Input = slot[2]
    caps = source.capabilities
    return orjson.dumps(
        [slot[0], slot[1], source.context_raw.decode(), None if caps is None else caps.decode()]
    )


async def run(env: ContestantEnv, work: Work) -> None:
    windowed = env.workload == "W3"
    changelog = f"{env.group}.{'windows' if windowed else 'balances'}.changelog"
    stateful = env.workload in ("W2", "W3")
    if stateful:
        await create_changelog(env.bootstrap, changelog)
    consumer = AIOKafkaConsumer(
        env.input,
        bootstrap_servers=env.bootstrap,
        group_id=env.group,
        client_id=work.hop,
        **CONSUMER,
    )
    producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, client_id=work.hop, **PRODUCER)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    first = FirstRecord(env.marker)
    balances: dict[bytes, int] = {}
    partitions: dict[int, Windows] = {}
    rejected = late = 0
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
                if windowed:
                    windows = partitions.get(tp.partition)
                    if windows is None:
                        windows = partitions[tp.partition] = Windows()
                    bad, too_late = await window_batch(
                        env, messages, windows, tp.partition, work, outputs, changelog
                    )
                    rejected, late = rejected + bad, late + too_late
                    continue
                changed: dict[bytes, int] = {}
                for m in messages:
                    try:
                        source = work.read(m)
                        deposit = source.deposit
                    except (Rejected, ValueError, KeyError, TypeError):
                        rejected += 1  # the other contestants dead-letter / deny these
                        continue
                    if stateful:
                        balance = balances.get(m.key, 0) + deposit.amount
                        balances[m.key] = changed[m.key] = balance
                        value = work.balance_changed(deposit, balance)
                    else:
                        value = work.accepted(deposit)
                    await outputs.add(
                        env.output,
                        partition_of(m.key),
                        m.key,
                        value,
                        work.headers(source),
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
        print(f"{work.hop}: rejected {rejected} records", file=sys.stderr)
    if late:
        print(f"{work.hop}: {late} late records (their windows had closed)", file=sys.stderr)


async def window_batch(
    env: ContestantEnv,
    messages: list,
    windows: Windows,
    partition: int,
    work: Work,
    outputs: Outputs,
    changelog: str,
) -> tuple[int, int]:
    """W3: fold one partition's records into their windows, then close the windows due.
    Returns how many records were rejected and how many late (their window had closed)."""
    opened, watermark = windows.open, windows.watermark
    changed: dict[tuple[bytes, int], list | None] = {}
    rejected = late = 0
    for m in messages:
        try:
            source = work.read(m)
            deposit = source.deposit
        except (Rejected, ValueError, KeyError, TypeError):
            rejected += 1  # the other contestants dead-letter / deny these
            continue
        t = int(deposit.event_time * 1000)
        start = t - t % WINDOW_MS
        if watermark >= start + WINDOW_MS + GRACE_MS:
            late += 1
            continue
        keys = opened.get(start)
        if keys is None:
            keys = opened[start] = {}
        slot = keys.get(m.key)
        if slot is None:
            keys[m.key] = slot = [1, deposit.amount, source]
        else:
            slot[0] += 1
            slot[1] += deposit.amount
            slot[2] = source
        changed[(m.key, start)] = slot
        if t > watermark:
            watermark = t
    due = sorted(start for start in opened if start + WINDOW_MS + GRACE_MS <= watermark)
    for start in due:
        for key, slot in opened.pop(start).items():
            source = slot[2]
            await outputs.add(
                env.output,
                partition_of(key),
                key,
                work.window_total(source.deposit.account, start, slot[0], slot[1]),
                work.headers(source),
            )
            changed[(key, start)] = None
    for (key, start), slot in changed.items():
        value = None if slot is None else window_state(slot)
        await outputs.add(changelog, partition, b"%s@%d" % (key, start), value, [])
    if watermark != windows.watermark:
        windows.watermark = watermark
        await outputs.add(changelog, partition, WATERMARK_KEY, b"%d" % watermark, [])
    return rejected, late


def main() -> None:
    env = ContestantEnv.from_env()
    work = LeanWork(env.workload) if "--lean" in sys.argv[1:] else Work(env.workload)
    asyncio.run(run(env, work))


if __name__ == "__main__":
    main()
