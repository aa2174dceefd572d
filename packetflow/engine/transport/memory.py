"""``memory://``: an in-process broker with topics, partitions, offsets and consumer groups.

It keeps Kafka's semantics that the engine relies on (per-partition order, keyed
partitioning with Kafka's murmur2, committed offsets per group, partitions split between
the members of a group and handed over only after the old owner let go, compacted
changelog reads), so engine behaviour tested here holds on ``kafka://``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from packetflow.core.effects import Delivery
from packetflow.engine.clock import WALL_CLOCK, Clock
from packetflow.engine.transport.base import (
    BEGINNING,
    BROKER_MAX_MESSAGE_BYTES,
    Acked,
    BrokerError,
    Committed,
    Consumer,
    Follower,
    Headers,
    Producer,
    RebalanceListener,
    Record,
    StartAt,
    TopicPartition,
    TopicSpec,
    Transport,
    record_bytes,
)
from packetflow.engine.transport.partitioner import group_of, partition_for_key

DEFAULT_PARTITIONS = 4


@dataclass
class _Group:
    members: list[MemoryConsumer] = field(default_factory=list)
    owner: dict[TopicPartition, MemoryConsumer] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    metadata: dict[TopicPartition, str] = field(default_factory=dict)


class MemoryBroker:
    """The shared state behind every ``memory://NAME`` transport in this process."""

    def __init__(self, clock: Clock = WALL_CLOCK, default_partitions: int = DEFAULT_PARTITIONS):
        self.clock = clock
        self.default_partitions = default_partitions
        self.topics: dict[str, list[list[Record]]] = {}
        self.compacted: set[str] = set()
        self.limits: dict[str, int] = {}  # max.message.bytes, where not the broker's default
        self.groups: dict[str, _Group] = {}
        self._round_robin = itertools.count()
        self._waiters: list[asyncio.Future[None]] = []
        # transactions: records of aborted ones, the first offset each open one wrote per
        # partition (read-committed readers stop there), and the live producer of each id
        self.aborted: set[tuple[str, int, int]] = set()
        self.open_txns: dict[TopicPartition, dict[int, int]] = {}
        self.txn_producers: dict[str, MemoryProducer] = {}

    # -- topics --------------------------------------------------------------------------

    def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        compacted: bool = False,
        max_message_bytes: int | None = None,
    ) -> None:
        if name not in self.topics:
            self.topics[name] = [[] for _ in range(partitions or self.default_partitions)]
            if max_message_bytes is not None:
                self.limits[name] = max_message_bytes
        if compacted:
            self.compacted.add(name)

    def limit(self, topic: str) -> int:
        """The largest record ``topic`` takes, like Kafka's ``max.message.bytes``."""
        return self.limits.get(topic, BROKER_MAX_MESSAGE_BYTES)

    def partitions(self, topic: str) -> list[list[Record]]:
        if topic not in self.topics:
            self.create_topic(topic)  # like auto.create.topics.enable
        return self.topics[topic]

    def end_offset(self, tp: TopicPartition) -> int:
        return len(self.partitions(tp.topic)[tp.partition])

    def append(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        partition: int | None,
        timestamp: int | None = None,
    ) -> Delivery:
        parts = self.partitions(topic)
        if partition is None:
            if key is None:
                partition = next(self._round_robin) % len(parts)
            else:
                partition = partition_for_key(key, len(parts))
        elif not 0 <= partition < len(parts):
            raise ValueError(f"topic {topic!r} has no partition {partition}")
        size = record_bytes(key, value, headers)
        if size > self.limit(topic):  # what Kafka refuses with MessageSizeTooLargeError
            raise BrokerError(
                f"{topic} refused a record of {size} bytes (max.message.bytes "
                f"{self.limit(topic)})"
            )
        log = parts[partition]
        offset = len(log)
        if timestamp is None:
            timestamp = int(self.clock.time() * 1000)
        log.append(Record(topic, partition, offset, key, value, tuple(headers), timestamp))
        self.wake()
        return Delivery(topic, partition, offset)

    def wake(self) -> None:
        """Wake everyone waiting for records (a record landed, or a transaction ended)."""
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def records(self, topic: str) -> list[Record]:
        """Every record of a topic, partition by partition (for tests and tools)."""
        return [r for log in self.partitions(topic) for r in log]

    def stable_end(self, tp: TopicPartition) -> int:
        """The last stable offset: read-committed readers see nothing from here on."""
        opens = self.open_txns.get(tp)
        return min(opens.values()) if opens else self.end_offset(tp)

    def read(
        self,
        tp: TopicPartition,
        start: int,
        limit: int | None = None,
        *,
        read_committed: bool = True,
    ) -> tuple[list[Record], int]:
        """Records of ``tp`` from offset ``start`` (at most ``limit`` offsets) and the next
        position. Read committed stops at the last stable offset and skips aborted records."""
        log = self.partitions(tp.topic)[tp.partition]
        end = self.stable_end(tp) if read_committed else len(log)
        if limit is not None:
            end = min(end, start + limit)
        chunk = log[start:end]
        if read_committed and self.aborted:
            aborted = self.aborted
            chunk = [r for r in chunk if (r.topic, r.partition, r.offset) not in aborted]
        return chunk, max(end, start)

    async def wait_for_records(self, timeout: float) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            # asyncio.wait, not wait_for: 3.11's wait_for can swallow a cancellation that
            # arrives as the waiter completes, and a cancelled follower would poll forever
            await asyncio.wait((waiter,), timeout=timeout)
        finally:
            if not waiter.done():
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    # -- groups --------------------------------------------------------------------------

    def group(self, name: str) -> _Group:
        return self.groups.setdefault(name, _Group())

    def target_assignment(self, group: _Group, member: MemoryConsumer) -> set[TopicPartition]:
        """Range-style assignment of every subscribed partition over the live members."""
        members = sorted(group.members, key=lambda m: m.member_id)
        if member not in members:
            return set()
        mine: set[TopicPartition] = set()
        topics = sorted({t for m in members for t in m.topics})
        for topic in topics:
            subscribers = [m for m in members if topic in m.topics]
            if member not in subscribers:
                continue
            for p in range(len(self.partitions(topic))):
                if subscribers[p % len(subscribers)] is member:
                    mine.add(TopicPartition(topic, p))
        return mine


_BROKERS: dict[str, MemoryBroker] = {}


def memory_broker(name: str = "default") -> MemoryBroker:
    """The process-wide broker called ``name`` (``memory://name``), created on first use."""
    if name not in _BROKERS:
        _BROKERS[name] = MemoryBroker()
    return _BROKERS[name]


def reset_memory_brokers() -> None:
    """Forget every in-process broker (tests call this between cases)."""
    _BROKERS.clear()


class FencedError(BrokerError):
    """A transactional producer replaced by a newer one with the same transactional id."""

    def __init__(self, message: str) -> None:
        super().__init__(message, fatal=True)


_producer_ids = itertools.count()


class MemoryProducer(Producer):
    """Appends at once; a transactional one keeps read-committed readers out until commit."""

    def __init__(self, broker: MemoryBroker, transactional_id: str | None = None) -> None:
        self._broker = broker
        self._transactional_id = transactional_id
        self._id = next(_producer_ids)
        self._in_txn = False
        self._fenced = False
        self._written: list[tuple[str, int, int]] = []
        self._offsets: dict[str, dict[TopicPartition, tuple[int, str]]] = {}

    async def start(self) -> None:
        tid = self._transactional_id
        if tid is None:
            return
        old = self._broker.txn_producers.get(tid)
        if old is not None and old is not self:  # like InitProducerId: fence and abort the old
            old._end(commit=False)
            old._fenced = True
        self._broker.txn_producers[tid] = self

    async def stop(self) -> None:
        if self._in_txn:
            self._end(commit=False)

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Acked:
        if self._transactional_id is not None:
            self._check_txn()
        if partition is None and key is not None and topic in self.key_groups:
            count = len(self._broker.partitions(topic))
            partition = partition_for_key(group_of(key, self.key_groups[topic]), count)
        delivery = self._broker.append(topic, value, key, headers, partition, timestamp)
        if self._in_txn:
            tp = TopicPartition(delivery.topic, delivery.partition)
            self._broker.open_txns.setdefault(tp, {}).setdefault(self._id, delivery.offset)
            self._written.append((delivery.topic, delivery.partition, delivery.offset))
        return Acked(delivery)

    async def flush(self) -> None:
        return None

    def _check_txn(self) -> None:
        if self._fenced:
            raise FencedError(f"producer {self._transactional_id!r} was fenced by a newer one")
        self._in_txn = True  # a transaction begins with the first thing sent in it

    async def begin(self) -> None:
        if self._transactional_id is None:
            raise RuntimeError("not a transactional producer")
        self._check_txn()

    async def send_offsets(
        self,
        offsets: dict[TopicPartition, int],
        group: str,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        self._check_txn()
        meta = metadata or {}
        self._offsets.setdefault(group, {}).update(
            {tp: (offset, meta.get(tp, "")) for tp, offset in offsets.items()}
        )

    async def commit(self) -> None:
        if self._in_txn:
            self._check_txn()
            self._end(commit=True)

    async def abort(self) -> None:
        if self._in_txn:
            self._end(commit=False)

    def _end(self, *, commit: bool) -> None:
        broker = self._broker
        for topic, partition, _ in self._written:
            opens = broker.open_txns.get(TopicPartition(topic, partition))
            if opens is not None:
                opens.pop(self._id, None)
        if commit:
            for name, offsets in self._offsets.items():
                group = broker.group(name)
                for tp, (offset, meta) in offsets.items():
                    group.committed[tp] = offset
                    group.metadata[tp] = meta
        else:
            broker.aborted.update(self._written)
        self._written = []
        self._offsets = {}
        self._in_txn = False
        broker.wake()


_member_ids = itertools.count()


class MemoryConsumer(Consumer):
    def __init__(
        self,
        broker: MemoryBroker,
        group: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        read_committed: bool = False,
    ) -> None:
        self._broker = broker
        self._group_name = group
        self.topics = tuple(topics)
        self._listener = listener
        self._read_committed = read_committed
        self.member_id = next(_member_ids)
        self._owned: set[TopicPartition] = set()
        self._paused: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._started = False

    @property
    def _group(self) -> _Group:
        return self._broker.group(self._group_name)

    async def start(self) -> None:
        for topic in self.topics:
            self._broker.partitions(topic)
        self._group.members.append(self)
        self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        group = self._group
        group.members.remove(self)
        await self._release(set(self._owned))

    def vanish(self) -> None:
        """Drop out of the group as a killed process does: no revocation callback, nothing
        committed; its partitions go to the others at their next poll (crash tests)."""
        if not self._started:
            return
        self._started = False
        group = self._group
        group.members.remove(self)
        for tp in self._owned:
            if group.owner.get(tp) is self:
                del group.owner[tp]
        self._owned.clear()

    async def _release(self, partitions: set[TopicPartition]) -> None:
        if not partitions:
            return
        await self._listener.on_revoked(partitions)
        group = self._group
        for tp in partitions:
            if group.owner.get(tp) is self:
                del group.owner[tp]
            self._positions.pop(tp, None)
        self._owned -= partitions
        self._paused -= partitions

    async def _rebalance(self) -> None:
        group = self._group
        target = self._broker.target_assignment(group, self)
        await self._release(self._owned - target)
        gained = {tp for tp in target - self._owned if tp not in group.owner}
        if gained:
            for tp in gained:
                group.owner[tp] = self
                self._positions[tp] = group.committed.get(tp, 0)
            self._owned |= gained
            await self._listener.on_assigned(gained)

    async def getmany(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Record]]:
        await self._rebalance()
        batch = self._take(max_records)
        if not batch and timeout > 0:
            await self._broker.wait_for_records(timeout)
            await self._rebalance()
            batch = self._take(max_records)
        return batch

    def _take(self, max_records: int) -> dict[TopicPartition, list[Record]]:
        out: dict[TopicPartition, list[Record]] = {}
        budget = max_records
        broker = self._broker
        for tp in sorted(self._owned - self._paused):
            if budget <= 0:
                break
            chunk, self._positions[tp] = broker.read(
                tp, self._positions[tp], budget, read_committed=self._read_committed
            )
            if chunk:
                out[tp] = chunk
                budget -= len(chunk)
        return out

    def _end(self, tp: TopicPartition) -> int:
        if self._read_committed:
            return self._broker.stable_end(tp)
        return self._broker.end_offset(tp)

    async def commit(
        self,
        offsets: dict[TopicPartition, int],
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        group = self._group
        meta = metadata or {}
        for tp, offset in offsets.items():
            if group.owner.get(tp) is not self:
                raise BrokerError(f"commit for {tp} which this consumer no longer owns")
            group.committed[tp] = offset
            group.metadata[tp] = meta.get(tp, "")

    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, Committed]:
        group = self._group
        return {
            tp: Committed(group.committed.get(tp), group.metadata.get(tp, ""))
            for tp in partitions
        }

    async def bounds(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int]]:
        return {tp: (0, self._end(tp)) for tp in partitions}

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._owned:
                self._positions[tp] = offset

    async def lag(self) -> dict[TopicPartition, int]:
        return {tp: self._end(tp) - self._positions[tp] for tp in self._owned}

    async def caught_up(self, tp: TopicPartition) -> bool:
        pos = self._positions.get(tp)
        return pos is not None and pos >= self._end(tp)

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused |= set(partitions) & self._owned

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        self._paused -= set(partitions)


class MemoryFollower(Follower):
    """Reads a topic of the in-process broker as it grows: new records are visible at once."""

    immediate = True

    def __init__(
        self, broker: MemoryBroker, topic: str, only: int | None, start: StartAt
    ) -> None:
        self._broker = broker
        self._topic = topic
        self._only = only
        self._start = start
        self._positions: dict[int, int] = {}

    async def start(self) -> None:
        count = len(self._broker.partitions(self._topic))
        chosen = [self._only] if self._only is not None else range(count)
        self._positions = {p: self._first(p) for p in chosen}

    def _first(self, partition: int) -> int:
        start, log = self._start, self._broker.partitions(self._topic)[partition]
        if start.end:
            return len(log)
        if start.offset is not None:
            return min(max(start.offset, 0), len(log))
        if start.time_ms is not None:
            return next((r.offset for r in log if r.timestamp >= start.time_ms), len(log))
        return 0

    async def stop(self) -> None:
        return None

    async def catch_up(self) -> list[Record]:
        return self.poll_nowait()

    async def poll(self, timeout: float) -> list[Record]:
        records = self.poll_nowait()
        if not records and timeout > 0:
            await self._broker.wait_for_records(timeout)
            records = self.poll_nowait()
        return records

    def poll_nowait(self) -> list[Record]:
        out: list[Record] = []
        for p, pos in self._positions.items():
            records, self._positions[p] = self._broker.read(TopicPartition(self._topic, p), pos)
            out.extend(records)
        return out


class MemoryTransport(Transport):
    in_process = True

    def __init__(self, url: str, name: str = "default", broker: MemoryBroker | None = None):
        self.url = url
        self.broker = broker or memory_broker(name)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def ensure_topics(self, specs: Iterable[TopicSpec]) -> None:
        for spec in specs:
            self.broker.create_topic(
                spec.name, spec.partitions, spec.compacted, spec.max_message_bytes
            )

    async def record_limits(self, topics: Iterable[str]) -> dict[str, int]:
        return {topic: self.broker.limit(topic) for topic in topics}

    async def partitions_for(self, topic: str) -> int:
        return len(self.broker.partitions(topic))

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        return MemoryProducer(self.broker, transactional_id)

    def consumer(
        self,
        group: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        *,
        isolation_level: str = "read_uncommitted",
        copartitioned: bool = False,
        instance_id: str | None = None,
    ) -> Consumer:
        # partition p of every topic goes to the same member (p modulo the members) anyway;
        # members are static already (they keep their partitions until they stop)
        return MemoryConsumer(
            self.broker, group, topics, listener, isolation_level == "read_committed"
        )

    def follow(
        self, topic: str, partitions: int, *, only: int | None = None, start: StartAt = BEGINNING
    ) -> Follower:
        return MemoryFollower(self.broker, topic, only, start)

    async def read_partitions(
        self,
        partitions: Iterable[TopicPartition],
        on_record: Callable[[Record], None],
        *,
        starts: Mapping[TopicPartition, int] | None = None,
        on_reset: Callable[[TopicPartition], None] | None = None,
    ) -> int:
        count = 0
        for tp in partitions:  # read committed, like the kafka transport's restores
            start = (starts or {}).get(tp, 0)
            if start > len(self.broker.partitions(tp.topic)[tp.partition]):
                start = 0
                if on_reset is not None:
                    on_reset(tp)
            records, _ = self.broker.read(tp, start)
            for record in records:
                on_record(record)
            count += len(records)
        return count
