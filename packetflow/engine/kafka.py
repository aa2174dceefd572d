"""``kafka://``: the transport on a real Kafka cluster, built directly on aiokafka.

URL options (query string): ``client_id``, ``replication_factor`` (default 1; raise it on a
real cluster), ``linger_ms`` (default 5), ``acks`` (default ``all``),
``transaction_timeout_ms`` (default 30000: how long a crashed exactly-once worker's open
transaction can hold back read-committed readers when no worker with its instance id
restarts to abort it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import ConsumerRecord
from aiokafka.structs import TopicPartition as AioTP

from packetflow.core.effects import Delivery
from packetflow.engine.transport import (
    Consumer,
    Follower,
    Headers,
    Producer,
    RebalanceListener,
    Record,
    TopicPartition,
    TopicSpec,
    Transport,
    partition_for_key,
)


def _tp(tp: AioTP | TopicPartition) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _record(m: ConsumerRecord[bytes, bytes]) -> Record:
    return Record(m.topic, m.partition, m.offset, m.key, m.value, m.headers, m.timestamp)


class KafkaProducer(Producer):
    """Builds one record batch per partition and ships it, closed, when it fills or on flush.

    The worker produces a whole batch of output at once and then waits for it, so waiting
    out ``linger_ms`` would only add latency: batches are closed and handed to aiokafka's
    sender at :meth:`flush` (or when full), and go out at once. This also skips aiokafka's
    per-record ``send()`` path, the largest per-record cost on the way out.
    """

    def __init__(
        self, bootstrap: str, options: dict[str, str], transactional_id: str | None = None
    ) -> None:
        extra: dict[str, Any] = {}
        if transactional_id is not None:
            extra["transactional_id"] = transactional_id
            extra["transaction_timeout_ms"] = int(options.get("transaction_timeout_ms", "30000"))
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id=options.get("client_id", "packetflow"),
            acks=_acks(options.get("acks", "all")),
            linger_ms=int(options.get("linger_ms", "5")),
            max_batch_size=int(options.get("max_batch_size", str(256 * 1024))),
            enable_idempotence=options.get("idempotence", "true") == "true"
            or transactional_id is not None,
            **extra,
        )
        self._open: dict[tuple[str, int], _Batch] = {}
        self._shipped: list[_Batch] = []
        self._partition_counts: dict[str, int] = {}
        self._round_robin = 0
        self._transactional = transactional_id is not None
        self._in_txn = False

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self.flush()
        await self._producer.stop()

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> _Ack:
        if self._transactional and not self._in_txn:
            await self.begin()  # a transaction begins with the first record sent in it
        if partition is None:
            partition = await self._partition(topic, key)
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = _Batch(self, topic, partition)
        offset = batch.append(key, value, headers, timestamp)
        if offset is None:  # full: ship it and start the next one
            await self._ship(batch)
            batch = self._open[(topic, partition)] = _Batch(self, topic, partition)
            offset = batch.append(key, value, headers, timestamp)
            if offset is None:
                raise ValueError(f"record for {topic} is larger than max_batch_size")
        return _Ack(batch, offset)

    async def flush(self) -> None:
        for batch in list(self._open.values()):
            await self._ship(batch)
        shipped, self._shipped = self._shipped, []
        for batch in shipped:
            await batch.future  # type: ignore[misc]  # raises the broker's refusal

    async def begin(self) -> None:
        await self._producer.begin_transaction()
        self._in_txn = True

    async def send_offsets(self, offsets: dict[TopicPartition, int], group: str) -> None:
        if not self._in_txn:
            await self.begin()
        await self._producer.send_offsets_to_transaction(
            {AioTP(tp.topic, tp.partition): o for tp, o in offsets.items()}, group
        )

    async def commit(self) -> None:
        if not self._in_txn:
            return  # nothing was sent: no transaction to commit
        await self.flush()
        self._in_txn = False
        await self._producer.commit_transaction()

    async def abort(self) -> None:
        if not self._in_txn:
            return
        self._open.clear()  # never shipped: nothing to take back
        self._shipped = []
        self._in_txn = False
        await self._producer.abort_transaction()

    async def _ship(self, batch: _Batch) -> None:
        if batch.future is not None:
            return
        if self._open.get((batch.topic, batch.partition)) is batch:
            del self._open[(batch.topic, batch.partition)]
        batch.builder.close()  # closed: the sender takes it without lingering
        batch.future = await self._producer.send_batch(
            batch.builder, batch.topic, partition=batch.partition
        )
        self._shipped.append(batch)

    async def _partition(self, topic: str, key: bytes | None) -> int:
        """Kafka's default partitioner: murmur2 of the key (memoised), else round robin."""
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(await self._producer.partitions_for(topic))
        if key is None:
            self._round_robin += 1
            return self._round_robin % count
        return partition_for_key(key, count)


class _Batch:
    """An open record batch for one partition, and the future of its delivery once shipped."""

    __slots__ = ("builder", "future", "partition", "producer", "topic")

    def __init__(self, producer: KafkaProducer, topic: str, partition: int) -> None:
        self.producer = producer
        self.topic = topic
        self.partition = partition
        self.builder = producer._producer.create_batch()
        self.future: asyncio.Future[Any] | None = None

    def append(
        self, key: bytes | None, value: bytes | None, headers: Headers, timestamp: int | None
    ) -> int | None:
        """The record's offset within the batch, or None when the batch is full."""
        if type(headers) is not list:  # the C record builder takes lists only
            headers = list(headers)
        metadata = self.builder.append(timestamp=timestamp, key=key, value=value, headers=headers)
        return None if metadata is None else metadata.offset


class _Ack:
    """One record's delivery: ships its batch if still open, then base offset + its offset."""

    __slots__ = ("_batch", "_offset")

    def __init__(self, batch: _Batch, offset: int) -> None:
        self._batch = batch
        self._offset = offset

    def __await__(self) -> Generator[Any, None, Delivery]:
        batch = self._batch
        if batch.future is None:
            yield from batch.producer._ship(batch).__await__()
        assert batch.future is not None
        md = yield from batch.future.__await__()
        return Delivery(batch.topic, batch.partition, md.offset + self._offset)


def _acks(value: str) -> int | str:
    return value if value == "all" else int(value)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, listener: RebalanceListener) -> None:
        self._listener = listener
        # Partitions whose on_assigned has completed. aiokafka hands out records of a new
        # assignment as soon as it is set, before (and while) the listener runs, so the
        # consumer holds such records back until the listener is done with their partition.
        self.ready: set[TopicPartition] = set()
        self.changed = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Iterable[AioTP]) -> None:
        parts = {_tp(tp) for tp in revoked}
        self.ready -= parts
        if parts:
            await self._listener.on_revoked(parts)

    async def on_partitions_assigned(self, assigned: Iterable[AioTP]) -> None:
        parts = {_tp(tp) for tp in assigned}
        try:
            if parts:
                await self._listener.on_assigned(parts)
        finally:
            self.ready |= parts
            self.changed.set()


class KafkaConsumer(Consumer):
    commit_in_background = True

    def __init__(
        self,
        bootstrap: str,
        group: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        options: dict[str, str],
        isolation_level: str,
        copartitioned: bool = False,
    ) -> None:
        self._topics = list(topics)
        self._listener = _Listener(listener)
        self._read_committed = isolation_level == "read_committed"
        self._consumer = AIOKafkaConsumer(
            partition_assignment_strategy=(
                (RangePartitionAssignor,) if copartitioned else (RoundRobinPartitionAssignor,)
            ),
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=options.get("client_id", "packetflow"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
            max_partition_fetch_bytes=int(options.get("max_partition_fetch_bytes", "1048576")),
            session_timeout_ms=int(options.get("session_timeout_ms", "10000")),
            heartbeat_interval_ms=int(options.get("heartbeat_interval_ms", "3000")),
            max_poll_interval_ms=int(options.get("max_poll_interval_ms", "300000")),
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.subscribe(self._topics, listener=self._listener)

    async def stop(self) -> None:
        # Leaves the group without calling on_partitions_revoked; the worker has committed
        # its last batch before it gets here.
        await self._consumer.stop()

    async def getmany(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Record]]:
        raw = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=max_records)
        while any(_tp(tp) not in self._listener.ready for tp in raw):
            assigned = self._consumer.assignment()
            raw = {tp: msgs for tp, msgs in raw.items() if tp in assigned}  # revoked: drop
            if all(_tp(tp) in self._listener.ready for tp in raw):
                break
            self._listener.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listener.changed.wait(), 0.1)
        return {
            TopicPartition(tp.topic, tp.partition): [_record(m) for m in msgs]
            for tp, msgs in raw.items()
        }

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if offsets:
            await self._consumer.commit(
                {AioTP(tp.topic, tp.partition): o for tp, o in offsets.items()}
            )

    async def lag(self) -> dict[TopicPartition, int]:
        assigned = list(self._consumer.assignment())
        if not assigned:
            return {}
        ends = await self._consumer.end_offsets(assigned)
        out = {}
        for tp in assigned:
            try:
                pos = await self._consumer.position(tp)
            except Exception:  # partition revoked meanwhile
                continue
            out[_tp(tp)] = max(ends[tp] - pos, 0)
        return out

    async def caught_up(self, tp: TopicPartition) -> bool:
        atp = AioTP(tp.topic, tp.partition)
        try:
            end = self._consumer.highwater(atp)  # as of the last fetch response
            if self._read_committed:
                stable = self._consumer.last_stable_offset(atp)
                if stable is not None and stable >= 0:
                    end = stable
            if end is None:
                return False
            return await self._consumer.position(atp) >= end
        except Exception:  # not (or no longer) assigned
            return False

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.pause(*self._owned(partitions))

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._consumer.resume(*self._owned(partitions))

    def _owned(self, partitions: Iterable[TopicPartition]) -> list[AioTP]:
        assigned = self._consumer.assignment()
        return [t for t in (AioTP(tp.topic, tp.partition) for tp in partitions) if t in assigned]


class KafkaFollower(Follower):
    """A group-less consumer assigned every partition of one topic, from the beginning.

    ``fetch_max_wait_ms`` (URL option ``follow_wait_ms``, default 200) bounds how long a new
    record waits on the broker before the follower sees it.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, options: dict[str, str]):
        self._topic = topic
        self._tps = [AioTP(topic, p) for p in range(partitions)]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id=options.get("client_id", "packetflow"),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=int(options.get("follow_wait_ms", "200")),
        )

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._tps)
        await self._consumer.seek_to_beginning(*self._tps)

    async def stop(self) -> None:
        await self._consumer.stop()

    async def catch_up(self) -> list[Record]:
        ends = await self._consumer.end_offsets(self._tps)
        out: list[Record] = []
        while True:
            behind = [tp for tp in self._tps if await self._consumer.position(tp) < ends[tp]]
            if not behind:
                return out
            out.extend(await self.poll(0.5))

    async def poll(self, timeout: float) -> list[Record]:
        raw = await self._consumer.getmany(timeout_ms=int(timeout * 1000), max_records=10_000)
        return [_record(m) for tp in sorted(raw) for m in raw[tp]]


class KafkaTransport(Transport):
    def __init__(self, url: str, bootstrap: str, options: dict[str, str] | None = None) -> None:
        self.url = url
        self.bootstrap = bootstrap
        self.options = dict(options or {})
        self._admin: AIOKafkaAdminClient | None = None
        self._partition_counts: dict[str, int] = {}

    async def start(self) -> None:
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=self.options.get("client_id", "packetflow")
        )
        await self._admin.start()

    async def stop(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    @property
    def admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise RuntimeError("transport not started")
        return self._admin

    async def ensure_topics(self, specs: Iterable[TopicSpec]) -> None:
        wanted = {s.name: s for s in specs}
        if not wanted:
            return
        existing = set(await self.admin.list_topics())
        missing = [s for name, s in wanted.items() if name not in existing]
        if not missing:
            return
        replication = int(self.options.get("replication_factor", "1"))
        new = [
            NewTopic(
                s.name,
                s.partitions,
                replication,
                topic_configs={"cleanup.policy": "compact"} if s.compacted else {},
            )
            for s in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):
            await self.admin.create_topics(new)
        await self._await_metadata([s.name for s in missing])

    async def _await_metadata(self, topics: list[str]) -> None:
        for _ in range(100):
            described = await self.admin.describe_topics(topics)
            if all(d.get("error_code", 0) == 0 and d.get("partitions") for d in described):
                return
            await asyncio.sleep(0.1)

    async def partitions_for(self, topic: str) -> int:
        if topic not in self._partition_counts:
            described = await self.admin.describe_topics([topic])
            parts = described[0].get("partitions") or []
            if not parts:
                raise LookupError(f"topic {topic!r} does not exist on {self.url}")
            self._partition_counts[topic] = len(parts)
        return self._partition_counts[topic]

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        return KafkaProducer(self.bootstrap, self.options, transactional_id)

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        *,
        isolation_level: str = "read_uncommitted",
        copartitioned: bool = False,
    ) -> Consumer:
        return KafkaConsumer(
            self.bootstrap, group, topics, listener, self.options, isolation_level, copartitioned
        )

    def follow(self, topic: str, partitions: int) -> Follower:
        return KafkaFollower(self.bootstrap, topic, partitions, self.options)

    async def read_partitions(
        self, partitions: Iterable[TopicPartition], on_record: Callable[[Record], None]
    ) -> int:
        tps = [AioTP(tp.topic, tp.partition) for tp in partitions]
        if not tps:
            return 0
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        )
        await consumer.start()
        count = 0
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            await consumer.seek_to_beginning(*tps)
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        if m.offset < ends[tp]:
                            on_record(_record(m))
                            count += 1
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        finally:
            await consumer.stop()
        return count
