"""The transport contract: what the engine needs from a broker, met by ``kafka://`` and ``memory://``.

The engine only speaks to these classes, so the same consumer loop, state restore and
dead-lettering run on a real Kafka cluster and on the in-process broker used by tests. This
module imports nothing of its implementations (``kafka.py``, ``memory.py``) nor of aiokafka.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

from packetflow.core.effects import Delivery

Headers = Sequence[tuple[str, bytes]]


class BrokerError(Exception):
    """The broker could not be reached, or refused an operation: about no single record.

    The worker retries such failures with backoff (rewinding to the last commit), never
    sets a record aside for them. ``fatal``: retrying cannot help (this worker's producer was
    fenced by a newer one with the same transactional id), so the worker stops.
    """

    def __init__(self, message: str, *, fatal: bool = False) -> None:
        super().__init__(message)
        self.fatal = fatal


class Committed(NamedTuple):
    """A group's committed position of one partition: the next offset to read (None: none
    committed yet) and the metadata string committed with it."""

    offset: int | None
    metadata: str


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(slots=True)
class Record:
    """One consumed record, transport-neutral. Read-only by contract: a transport may hand
    on its client's own record object with these fields (``kafka.py`` does)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int  # milliseconds since the epoch


@dataclass(frozen=True, slots=True)
class StartAt:
    """Where a :class:`Follower` starts in each partition: the beginning (the default), the
    end as of its start, an ``offset`` (clamped to what the partition holds), or the first
    record stamped at or after ``time_ms`` (the end where there is none)."""

    end: bool = False
    offset: int | None = None
    time_ms: int | None = None


BEGINNING = StartAt()
END = StartAt(end=True)


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False
    # the largest record batch the topic takes (Kafka's max.message.bytes); None: the broker's
    max_message_bytes: int | None = None


# Kafka's own default for message.max.bytes (what a topic takes unless configured).
BROKER_MAX_MESSAGE_BYTES = 1_048_588
# A record batch's header, plus the most a record's framing adds (varints, attributes).
_BATCH_OVERHEAD = 61 + 21
_HEADER_OVERHEAD = 10


def record_bytes(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """An upper bound of a record's size as a batch of its own on the wire: what a topic's
    ``max.message.bytes`` is compared with."""
    size = _BATCH_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
    for name, raw in headers:
        size += _HEADER_OVERHEAD + len(name) + (len(raw) if raw else 0)
    return size


class RebalanceListener(abc.ABC):
    """Told, and awaited, when partitions leave or join this consumer."""

    @abc.abstractmethod
    async def on_revoked(self, partitions: set[TopicPartition]) -> None: ...

    @abc.abstractmethod
    async def on_assigned(self, partitions: set[TopicPartition]) -> None: ...


class Producer(abc.ABC):
    # physical topic -> separator: records with a key go to the partition of the key's part
    # before the separator (partitioner.group_of); set by the worker or client from the
    # topology (Topology.key_groups) before the first send; other topics hash the whole key
    key_groups: Mapping[str, bytes] = MappingProxyType({})

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    def queued(self) -> int:
        """Records sent and not yet acknowledged by the broker (for the metrics)."""
        return 0

    @abc.abstractmethod
    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> Awaitable[Delivery]:
        """Queue a record. Await the result for its delivery, or :meth:`flush` to wait for all.

        ``timestamp``: the record's, in ms since the epoch (default: now).
        """

    def send_nowait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> Awaitable[Delivery] | None:
        """:meth:`send` without waiting, when queueing the record needs none (the engine
        sends every output this way first); None when it would have to wait: then the
        record is not queued and the caller awaits :meth:`send`."""
        return None

    @abc.abstractmethod
    async def flush(self) -> None:
        """Wait until every record sent so far is acknowledged; raise the first failure."""

    def discard(self) -> None:  # noqa: B027 - producers that send at once hold nothing
        """Forget what was queued and not yet shipped (a failed batch is being rewound)."""

    # -- transactions (exactly-once); only producers made with a transactional id --------

    async def begin(self) -> None:
        """Open a transaction: what is sent until :meth:`commit` becomes visible atomically."""
        raise NotImplementedError(f"{type(self).__name__} is not transactional")

    async def send_offsets(
        self,
        offsets: dict[TopicPartition, int],
        group: str,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        """Commit ``group``'s consumed ``offsets`` as part of the open transaction."""
        raise NotImplementedError(f"{type(self).__name__} is not transactional")

    async def commit(self) -> None:
        """Flush and commit the open transaction."""
        raise NotImplementedError(f"{type(self).__name__} is not transactional")

    async def abort(self) -> None:
        """Abort the open transaction: read-committed readers never see what it sent."""
        raise NotImplementedError(f"{type(self).__name__} is not transactional")


class Consumer(abc.ABC):
    # True when commit() is a network round trip worth overlapping with the next batch.
    commit_in_background = False

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None:
        """Leave the group (revoking partitions through the listener first)."""

    @abc.abstractmethod
    async def getmany(
        self, timeout: float, max_records: int
    ) -> dict[TopicPartition, list[Record]]: ...

    @abc.abstractmethod
    async def commit(
        self,
        offsets: dict[TopicPartition, int],
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        """Commit the next offset to read for each partition (with ``metadata``, default "")."""

    @abc.abstractmethod
    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, Committed]:
        """What the group last committed for each partition (a broker round trip)."""

    @abc.abstractmethod
    async def bounds(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int]]:
        """The first offset still held and the end offset of each partition (for this
        consumer's isolation level)."""

    @abc.abstractmethod
    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read each partition from the given offset next (after a failed batch)."""

    @abc.abstractmethod
    async def lag(self) -> dict[TopicPartition, int]:
        """Records not yet consumed per assigned partition (end offset - position)."""

    @abc.abstractmethod
    async def caught_up(self, tp: TopicPartition) -> bool:
        """True when everything in ``tp`` known to this consumer has been fetched (no network)."""

    @abc.abstractmethod
    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        """Fetch nothing more from ``partitions`` until :meth:`resume` (no rebalance)."""

    @abc.abstractmethod
    def resume(self, partitions: Iterable[TopicPartition]) -> None: ...


class Follower(abc.ABC):
    """Follows every partition of one topic from its beginning, outside any consumer group.

    Workers follow small control topics (revocations) this way: every worker sees every
    record. ``immediate`` followers (in-process) see new records at once through
    :meth:`poll_nowait`; others need :meth:`poll` to be awaited in a background task.
    """

    immediate: bool = False

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def catch_up(self) -> list[Record]:
        """Every record up to the topic's end as of now (the first call reads from offset 0)."""

    @abc.abstractmethod
    async def poll(self, timeout: float) -> list[Record]:
        """New records, waiting up to ``timeout`` seconds for some to arrive."""

    def poll_nowait(self) -> list[Record]:
        """New records already at hand, without waiting (always empty unless ``immediate``)."""
        return []


class Transport(abc.ABC):
    """A broker connection: admin, producers, group consumers and whole-partition reads."""

    url: str
    # the broker lives in this process (memory://): every worker of it shares the process
    in_process: bool = False

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def ensure_topics(self, specs: Iterable[TopicSpec]) -> None: ...

    @abc.abstractmethod
    async def partitions_for(self, topic: str) -> int: ...

    @abc.abstractmethod
    def producer(self, *, transactional_id: str | None = None) -> Producer:
        """A producer; with ``transactional_id``, a transactional one (exactly-once)."""

    @abc.abstractmethod
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
        """A group consumer; ``copartitioned`` gives one member the same partition numbers of
        every topic (range assignment), which partitioned tables need. ``instance_id`` makes
        it a static member: restarted with the same id within the session timeout, it gets
        its partitions back without a rebalance."""

    @abc.abstractmethod
    async def record_limits(self, topics: Iterable[str]) -> dict[str, int]:
        """The largest record each topic takes (``max.message.bytes``), by physical name."""

    async def ping(self) -> None:  # noqa: B027 - in-process brokers always answer
        """Raise :class:`BrokerError` unless the broker answers now (outage monitoring)."""

    @abc.abstractmethod
    async def read_partitions(
        self,
        partitions: Iterable[TopicPartition],
        on_record: Callable[[Record], None],
        *,
        starts: Mapping[TopicPartition, int] | None = None,
        on_reset: Callable[[TopicPartition], None] | None = None,
    ) -> int:
        """Read each partition from ``starts[tp]`` (else its beginning) to its current end,
        committed records only; returns records read. A start outside the partition's
        offsets (the topic was deleted and made again, or cut) reads it from its beginning
        instead, after ``on_reset(tp)``."""

    def follow(
        self, topic: str, partitions: int, *, only: int | None = None, start: StartAt = BEGINNING
    ) -> Follower:
        """A :class:`Follower` of the ``partitions`` partitions of ``topic`` (which must
        exist), or of partition ``only``, from ``start`` in each."""
        raise NotImplementedError(f"{type(self).__name__} cannot follow topics")

    async def read_topic(self, topic: str, on_record: Callable[[Record], None]) -> int:
        """Read every partition of ``topic`` from the beginning to the current end."""
        count = await self.partitions_for(topic)
        return await self.read_partitions(
            [TopicPartition(topic, p) for p in range(count)], on_record
        )


class Acked:
    """An awaitable that is already done: a delivery the broker has acknowledged."""

    __slots__ = ("delivery",)

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery

    def __await__(self) -> Generator[Any, None, Delivery]:
        return self.delivery
        yield  # a generator that never suspends
