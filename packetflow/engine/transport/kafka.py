"""``kafka://``: the transport on a real Kafka cluster, built directly on aiokafka.

URL options (query string): ``client_id``, ``replication_factor`` (default 1; raise it on a
real cluster), ``linger_ms`` (default 5), ``acks`` (default ``all``),
``session_timeout_ms`` (default 10000: how long the group waits for a worker that stopped
answering), ``heartbeat_interval_ms`` (default 3000), ``max_poll_interval_ms``, and
``transaction_timeout_ms`` (exactly-once; default the session timeout minus a heartbeat
interval minus one second, 6000: a worker that stalls mid-transaction long enough for its
partitions to move on has its transaction aborted by the broker before another worker can
take them, so the stalled one, a zombie, is fenced when it wakes up instead of committing
twice what the other did; a batch must therefore finish within it).

Security (what a cluster run with TLS and ACLs needs): ``security_protocol``
(``PLAINTEXT``, ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``), ``ssl_cafile``,
``ssl_certfile`` and ``ssl_keyfile`` (client certificate), ``ssl_check_hostname``
(default ``true``), ``sasl_mechanism`` (``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512``);
the SASL user is the URL's ``user@``, its password the URL's ``user:password@`` or
``$PACKETFLOW_KAFKA_PASSWORD`` (better: it keeps the password out of process listings).

Every aiokafka failure surfaces as :class:`~packetflow.engine.transport.BrokerError`, which
the worker retries; aiokafka's own logging of an outage is rate-limited (``engine.outage``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable, Generator, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    ProducerFenced,
    TopicAlreadyExistsError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Array, Int16, Int32, Schema, String
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from aiokafka.structs import TopicPartition as AioTP

from packetflow.core.effects import Delivery
from packetflow.engine.transport.base import (
    BEGINNING,
    BROKER_MAX_MESSAGE_BYTES,
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
)
from packetflow.engine.transport.partitioner import group_of, partition_for_key
from packetflow.engine.transport.url import BrokerURL, BrokerURLError

log = logging.getLogger("packetflow.kafka")
T = TypeVar("T")
PASSWORD_ENV = "PACKETFLOW_KAFKA_PASSWORD"
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def client_options(url: BrokerURL | None, options: Mapping[str, str]) -> dict[str, Any]:
    """What every aiokafka client of this transport is given: client id and security."""
    out: dict[str, Any] = {"client_id": options.get("client_id", "packetflow")}
    protocol = options.get("security_protocol", "PLAINTEXT").upper()
    if protocol not in SECURITY_PROTOCOLS:
        raise BrokerURLError(
            f"security_protocol={protocol}: use one of {', '.join(SECURITY_PROTOCOLS)}"
        )
    out["security_protocol"] = protocol
    if protocol in ("SSL", "SASL_SSL"):
        context = create_ssl_context(
            cafile=options.get("ssl_cafile"),
            certfile=options.get("ssl_certfile"),
            keyfile=options.get("ssl_keyfile"),
        )
        context.check_hostname = options.get("ssl_check_hostname", "true").lower() != "false"
        out["ssl_context"] = context
    if protocol.startswith("SASL_"):
        mechanism = options.get("sasl_mechanism", "PLAIN").upper()
        if mechanism not in SASL_MECHANISMS:
            raise BrokerURLError(
                f"sasl_mechanism={mechanism}: use one of {', '.join(SASL_MECHANISMS)}"
            )
        username = (url.username if url else None) or options.get("sasl_username")
        password = (url.password if url else None) or os.environ.get(PASSWORD_ENV)
        if not username or password is None:
            raise BrokerURLError(
                f"{protocol} needs a user and a password: kafka://USER@host:port with the "
                f"password in ${PASSWORD_ENV} (or kafka://USER:PASSWORD@host:port)"
            )
        out.update(
            sasl_mechanism=mechanism, sasl_plain_username=username, sasl_plain_password=password
        )
    return out


def transaction_timeout_ms(options: Mapping[str, str]) -> int:
    """See the module docstring: below the time the group takes to give up on a member."""
    if "transaction_timeout_ms" in options:
        return int(options["transaction_timeout_ms"])
    session = int(options.get("session_timeout_ms", "10000"))
    heartbeat = int(options.get("heartbeat_interval_ms", "3000"))
    return max(session - heartbeat - 1000, 1000)


async def _admin_call(what: str, call: Callable[..., Awaitable[T]], *args: Any) -> T:
    """An admin request, tried again while the cluster is moving (a node down, a leader
    being elected: aiokafka calls such errors retriable); then a :class:`BrokerError`."""
    attempts = 6
    for attempt in range(attempts):
        try:
            return await call(*args)
        except KafkaError as exc:
            if not getattr(exc, "retriable", False) or attempt == attempts - 1:
                raise _broker_error(exc, what) from exc
        await asyncio.sleep(0.25 * (attempt + 1))
    raise AssertionError("unreachable")  # pragma: no cover


def _broker_error(exc: BaseException, what: str) -> BrokerError:
    fatal = isinstance(exc, (ProducerFenced, InvalidProducerEpoch))
    detail = str(exc) or type(exc).__name__
    if type(exc).__name__ not in detail:
        detail = f"{type(exc).__name__}: {detail}"
    return BrokerError(f"{what}: {detail}", fatal=fatal)


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
        self,
        bootstrap: str,
        options: dict[str, str],
        transactional_id: str | None = None,
        *,
        client: dict[str, Any],
        limits: Mapping[str, int],
    ) -> None:
        extra: dict[str, Any] = {}
        if transactional_id is not None:
            extra["transactional_id"] = transactional_id
            extra["transaction_timeout_ms"] = transaction_timeout_ms(options)
        self._batch_size = int(options.get("max_batch_size", str(256 * 1024)))
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks=_acks(options.get("acks", "all")),
            linger_ms=int(options.get("linger_ms", "5")),
            max_batch_size=self._batch_size,
            # what a set-aside copy of the largest accepted record needs (send() path only)
            max_request_size=max([BROKER_MAX_MESSAGE_BYTES, *limits.values()]) + 1024,
            enable_idempotence=options.get("idempotence", "true") == "true"
            or transactional_id is not None,
            **client,
            **extra,
        )
        # a batch never holds more than its topic takes (max.message.bytes)
        self._limits = limits
        self._open: dict[tuple[str, int], _Batch] = {}
        self._shipped: list[_Batch] = []
        self._partition_counts: dict[str, int] = {}
        self._round_robin = 0
        self._transactional = transactional_id is not None
        self._in_txn = False

    async def start(self) -> None:
        try:
            await self._producer.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await self._producer.stop()
            raise _broker_error(exc, "starting the producer") from exc

    def queued(self) -> int:
        batches = [*self._open.values(), *self._shipped]
        return sum(
            b.builder.record_count() for b in batches if b.future is None or not b.future.done()
        )

    async def stop(self) -> None:
        try:
            await self.flush()
        finally:
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
        try:
            if self._transactional and not self._in_txn:
                await self.begin()  # a transaction begins with the first record sent in it
            if partition is None:
                partition = await self._partition(topic, key)
            batch = self._open_batch(topic, partition)
            offset = batch.append(key, value, headers, timestamp)
            if offset is None:  # full: ship it and start the next one
                await self._ship(batch)
                batch = self._open[(topic, partition)] = self._new_batch(topic, partition)
                offset = batch.append(key, value, headers, timestamp)
                if offset is None:
                    raise ValueError(f"record for {topic} is larger than max_batch_size")
        except KafkaError as exc:
            raise _broker_error(exc, f"sending to {topic}") from exc
        return _Ack(batch, offset)

    def send_nowait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> _Ack | None:
        """Append to the partition's open batch when there is one with room, nothing to
        begin and the topic's partition count known: no coroutine per record."""
        if self._transactional and not self._in_txn:
            return None
        count = self._partition_counts.get(topic)
        if count is None:
            return None
        batch = self._open_batch(topic, self._pick(topic, key, count))
        offset = batch.append(key, value, headers, None)
        return None if offset is None else _Ack(batch, offset)

    async def flush(self) -> None:
        try:
            for batch in list(self._open.values()):
                await self._ship(batch)
            shipped, self._shipped = self._shipped, []
            for batch in shipped:
                assert batch.future is not None  # shipped
                await asyncio.shield(batch.future)  # raises the broker's refusal
        except KafkaError as exc:
            raise _broker_error(exc, "waiting for the broker to acknowledge") from exc

    def discard(self) -> None:
        """Forget records not yet shipped (a failed batch is being rewound)."""
        self._open.clear()
        self._shipped = []

    async def begin(self) -> None:
        if self._in_txn:
            return
        # set before awaiting: partitions processed concurrently send at the same time, and
        # only the first may begin the transaction
        self._in_txn = True
        try:
            await self._producer.begin_transaction()
        except BaseException:
            self._in_txn = False
            raise

    async def send_offsets(
        self,
        offsets: dict[TopicPartition, int],
        group: str,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        meta = metadata or {}
        try:
            if not self._in_txn:
                await self.begin()
            await self._producer.send_offsets_to_transaction(
                {
                    AioTP(tp.topic, tp.partition): OffsetAndMetadata(o, meta.get(tp, ""))
                    for tp, o in offsets.items()
                },
                group,
            )
        except KafkaError as exc:
            raise _broker_error(exc, "committing offsets in the transaction") from exc

    async def commit(self) -> None:
        if not self._in_txn:
            return  # nothing was sent: no transaction to commit
        await self.flush()
        self._in_txn = False
        try:
            await self._producer.commit_transaction()
        except KafkaError as exc:
            raise _broker_error(exc, "committing the transaction") from exc

    async def abort(self) -> None:
        if not self._in_txn:
            return
        self.discard()  # never shipped: nothing to take back
        self._in_txn = False
        try:
            await self._producer.abort_transaction()
        except KafkaError as exc:
            raise _broker_error(exc, "aborting the transaction") from exc

    def _new_batch(self, topic: str, partition: int) -> _Batch:
        size = min(self._batch_size, self._limits.get(topic, BROKER_MAX_MESSAGE_BYTES) - 100)
        return _Batch(self, topic, partition, size)

    async def _ship(self, batch: _Batch) -> None:
        if batch.future is not None:
            return
        if self._open.get((batch.topic, batch.partition)) is batch:
            del self._open[(batch.topic, batch.partition)]
        batch.builder.close()  # closed: the sender takes it without lingering
        # the batch's future exists before handing it over: another record's ack awaited
        # meanwhile waits for it instead of shipping the same batch a second time
        shipped = batch.future = asyncio.get_running_loop().create_future()
        try:
            delivery = await self._producer.send_batch(
                batch.builder, batch.topic, partition=batch.partition
            )
        except BaseException as exc:
            if not shipped.done():
                shipped.set_exception(exc)
                shipped.exception()  # retrieved here: the caller raises it
            raise
        delivery.add_done_callback(functools.partial(_settle, shipped))
        self._shipped.append(batch)

    async def _partition(self, topic: str, key: bytes | None) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = self._partition_counts[topic] = len(await self._producer.partitions_for(topic))
        return self._pick(topic, key, count)

    def _pick(self, topic: str, key: bytes | None, count: int) -> int:
        """Kafka's default partitioner: murmur2 of the key (memoised; of its group on a
        topic keyed by groups), else round robin."""
        if key is None:
            self._round_robin += 1
            return self._round_robin % count
        if self.key_groups and topic in self.key_groups:
            key = group_of(key, self.key_groups[topic])
        return partition_for_key(key, count)

    def _open_batch(self, topic: str, partition: int) -> _Batch:
        """The partition's open batch, started if there is none."""
        batch = self._open.get((topic, partition))
        if batch is None:
            batch = self._open[(topic, partition)] = self._new_batch(topic, partition)
        return batch


class _Batch:
    """An open record batch for one partition, and the future of its delivery once shipped."""

    __slots__ = ("builder", "future", "partition", "producer", "topic")

    def __init__(self, producer: KafkaProducer, topic: str, partition: int, size: int) -> None:
        self.producer = producer
        self.topic = topic
        self.partition = partition
        # like AIOKafkaProducer.create_batch(), but no larger than the topic takes
        self.builder = BatchBuilder(size, 0, is_transactional=producer._transactional)
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
        # shielded: the batch's future is every record's in it; cancelling one waiter must
        # not cancel it for the flush and the others
        md = yield from asyncio.shield(batch.future).__await__()
        return Delivery(batch.topic, batch.partition, md.offset + self._offset)


def _settle(target: asyncio.Future[Any], source: asyncio.Future[Any]) -> None:
    """Give ``target`` the outcome of ``source`` (a batch's delivery)."""
    if target.done():
        return
    if source.cancelled():
        target.cancel()
    elif source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


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
        *,
        client: dict[str, Any],
        instance_id: str | None = None,
    ) -> None:
        self._topics = list(topics)
        self._group = group
        self._instance_id = instance_id
        self._listener = _Listener(listener)
        self._read_committed = isolation_level == "read_committed"
        self._consumer = AIOKafkaConsumer(
            partition_assignment_strategy=(
                (RangePartitionAssignor,) if copartitioned else (RoundRobinPartitionAssignor,)
            ),
            bootstrap_servers=bootstrap,
            group_id=group,
            group_instance_id=instance_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation_level,
            max_partition_fetch_bytes=int(options.get("max_partition_fetch_bytes", "1048576")),
            session_timeout_ms=int(options.get("session_timeout_ms", "10000")),
            heartbeat_interval_ms=int(options.get("heartbeat_interval_ms", "3000")),
            max_poll_interval_ms=int(options.get("max_poll_interval_ms", "300000")),
            **client,
        )

    async def start(self) -> None:
        try:
            await self._consumer.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            raise _broker_error(exc, "joining the consumer group") from exc
        self._consumer.subscribe(self._topics, listener=self._listener)

    async def stop(self) -> None:
        # Leaves the group without calling on_partitions_revoked; the worker has committed
        # its last batch before it gets here. aiokafka sends no LeaveGroup for a static
        # member (it expects it back soon): say so ourselves, or its partitions would wait
        # out the session timeout before anyone else may take them.
        if self._instance_id is not None:
            await self._leave_as_static_member()
        await self._consumer.stop()

    async def _leave_as_static_member(self) -> None:
        coordinator = self._consumer._coordinator
        if coordinator is None or coordinator.coordinator_id is None:
            return
        request = _LeaveGroupV3(self._group, coordinator.member_id, self._instance_id or "")
        try:
            await asyncio.wait_for(coordinator._send_req(request), 5.0)
        except Exception as exc:  # best effort: the session timeout still frees the partitions
            log.warning("static member %s could not leave the group: %s", self._instance_id, exc)

    async def getmany(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Record]]:
        try:
            raw = await self._consumer.getmany(
                timeout_ms=int(timeout * 1000), max_records=max_records
            )
        except KafkaError as exc:
            raise _broker_error(exc, "fetching") from exc
        while any(_tp(tp) not in self._listener.ready for tp in raw):
            assigned = self._consumer.assignment()
            raw = {tp: msgs for tp, msgs in raw.items() if tp in assigned}  # revoked: drop
            if all(_tp(tp) in self._listener.ready for tp in raw):
                break
            self._listener.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._listener.changed.wait(), 0.1)
        # aiokafka's ConsumerRecord has every field of a Record under the same name and
        # meaning (topic, partition, offset, key, value, headers, timestamp): handed on as it
        # is rather than copied, one object fewer per record on the hot path
        return {
            TopicPartition(tp.topic, tp.partition): cast("list[Record]", msgs)
            for tp, msgs in raw.items()
        }

    async def commit(
        self,
        offsets: dict[TopicPartition, int],
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        if not offsets:
            return
        meta = metadata or {}
        try:
            await self._consumer.commit(
                {
                    AioTP(tp.topic, tp.partition): OffsetAndMetadata(o, meta.get(tp, ""))
                    for tp, o in offsets.items()
                }
            )
        except KafkaError as exc:
            raise _broker_error(exc, "committing offsets") from exc

    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, Committed]:
        tps = [AioTP(tp.topic, tp.partition) for tp in partitions]
        if not tps:
            return {}
        coordinator = self._consumer._coordinator
        try:
            found = await coordinator.fetch_committed_offsets(tps)
        except KafkaError as exc:
            raise _broker_error(exc, "reading committed offsets") from exc
        out = {}
        for tp in tps:
            entry = found.get(tp)
            offset = entry.offset if entry is not None and entry.offset >= 0 else None
            out[_tp(tp)] = Committed(offset, (entry.metadata or "") if entry else "")
        return out

    async def bounds(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int]]:
        tps = [AioTP(tp.topic, tp.partition) for tp in partitions]
        if not tps:
            return {}
        try:
            first = await self._consumer.beginning_offsets(tps)
            end = await self._consumer.end_offsets(tps)
        except KafkaError as exc:
            raise _broker_error(exc, "reading partition offsets") from exc
        return {_tp(tp): (first[tp], end[tp]) for tp in tps}

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        assigned = self._consumer.assignment()
        for tp, offset in offsets.items():
            atp = AioTP(tp.topic, tp.partition)
            if atp in assigned:
                self._consumer.seek(atp, offset)

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


# LeaveGroup v3 (KIP-345): a static member leaves by its group instance id. aiokafka has
# only v0/v1, which a static member must not use.
class _LeaveGroupResponseV3(Response):
    API_KEY = 13
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("error_code", Int16),
        (
            "members",
            Array(
                ("member_id", String("utf-8")),
                ("group_instance_id", String("utf-8")),
                ("error_code", Int16),
            ),
        ),
    )


class _LeaveGroupRequestV3(RequestStruct):
    API_KEY = 13
    API_VERSION = 3
    RESPONSE_TYPE = _LeaveGroupResponseV3
    SCHEMA = Schema(
        ("group", String("utf-8")),
        ("members", Array(("member_id", String("utf-8")), ("group_instance_id", String("utf-8")))),
    )


class _LeaveGroupV3(Request[_LeaveGroupRequestV3]):
    API_KEY = 13

    def __init__(self, group: str, member_id: str, instance_id: str) -> None:
        self._group = group
        self._member = (member_id, instance_id)

    def build(self, request_struct_class: type[_LeaveGroupRequestV3]) -> _LeaveGroupRequestV3:
        return request_struct_class(self._group, [self._member])


class KafkaFollower(Follower):
    """A group-less consumer assigned every partition of one topic, from the beginning.

    ``fetch_max_wait_ms`` (URL option ``follow_wait_ms``, default 200) bounds how long a new
    record waits on the broker before the follower sees it.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        options: dict[str, str],
        client: dict[str, Any],
        only: int | None = None,
        start: StartAt = BEGINNING,
    ):
        self._topic = topic
        self._start = start
        self._tps = [AioTP(topic, p) for p in ([only] if only is not None else range(partitions))]
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            **client,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=int(options.get("follow_wait_ms", "200")),
        )

    async def start(self) -> None:
        try:
            await self._consumer.start()
            self._consumer.assign(self._tps)
            await self._seek(self._start)
        except (KafkaError, ValueError) as exc:  # ValueError: a time aiokafka cannot look up
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            raise _broker_error(exc, f"following {self._topic}") from exc

    async def _seek(self, start: StartAt) -> None:
        consumer, tps = self._consumer, self._tps
        if start.end:
            await consumer.seek_to_end(*tps)
            for tp in tps:  # resolved now: what is written after start() is read
                await consumer.position(tp)
        elif start.offset is not None:
            firsts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, min(max(start.offset, firsts[tp]), ends[tp]))
        elif start.time_ms is not None:
            found = await consumer.offsets_for_times({tp: start.time_ms for tp in tps})
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                at = found.get(tp)
                consumer.seek(tp, at.offset if at is not None else ends[tp])
        else:
            await consumer.seek_to_beginning(*tps)

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
    def __init__(
        self,
        url: str,
        bootstrap: str,
        options: dict[str, str] | None = None,
        parsed: BrokerURL | None = None,
    ) -> None:
        parsed = parsed or BrokerURL.parse(url)
        self.url = parsed.safe  # never the password
        self.bootstrap = bootstrap
        self.options = dict(options or {})
        self._client = client_options(parsed, self.options)
        self._admin: AIOKafkaAdminClient | None = None
        self._users = 0  # starts not yet stopped (see start)
        self._partition_counts: dict[str, int] = {}
        self._limits: dict[str, int] = {}

    async def start(self) -> None:
        """Connect; a transport shared (a worker's, handed to a service's Client) is started
        and stopped by each user, and closes when the last one stops."""
        if self._admin is not None:
            self._users += 1
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self._client)
        try:
            await admin.start()
        except KafkaError as exc:
            with contextlib.suppress(Exception):
                await admin.close()
            raise _broker_error(exc, f"connecting to {self.url}") from exc
        self._admin, self._users = admin, 1

    async def stop(self) -> None:
        self._users = max(self._users - 1, 0)
        if self._admin is not None and self._users == 0:
            admin, self._admin = self._admin, None
            await admin.close()

    @property
    def admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise RuntimeError("transport not started")
        return self._admin

    async def ping(self) -> None:
        try:
            await asyncio.wait_for(self.admin.describe_cluster(), 5.0)
        except (KafkaError, TimeoutError) as exc:
            raise _broker_error(exc, f"{self.url} does not answer") from exc

    async def ensure_topics(self, specs: Iterable[TopicSpec]) -> None:
        wanted = {s.name: s for s in specs}
        if not wanted:
            return
        admin = self.admin
        existing = set(await _admin_call("listing topics", admin.list_topics))
        missing = [s for name, s in wanted.items() if name not in existing]
        if not missing:
            return
        replication = int(self.options.get("replication_factor", "1"))
        new = [
            NewTopic(s.name, s.partitions, replication, topic_configs=_topic_configs(s))
            for s in missing
        ]

        async def create() -> None:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(new)

        await _admin_call("creating topics", create)
        await self._await_metadata([s.name for s in missing])

    async def _await_metadata(self, topics: list[str]) -> None:
        for _ in range(100):
            described = await _admin_call("describing topics", self.admin.describe_topics, topics)
            if all(d.get("error_code", 0) == 0 and d.get("partitions") for d in described):
                return
            await asyncio.sleep(0.1)

    async def record_limits(self, topics: Iterable[str]) -> dict[str, int]:
        wanted = [t for t in dict.fromkeys(topics) if t not in self._limits]
        for _ in range(50):  # a topic just created may take a moment to be described
            if not wanted:
                break
            resources = [
                ConfigResource(ConfigResourceType.TOPIC, t, {"max.message.bytes": None})
                for t in wanted
            ]
            responses = await _admin_call(
                "reading topic configs", self.admin.describe_configs, resources
            )
            for response in responses:
                for resource in response.to_object()["resources"]:
                    if resource["error_code"]:
                        continue
                    for entry in resource["config_entries"]:
                        if entry["config_names"] == "max.message.bytes":
                            self._limits[resource["resource_name"]] = int(entry["config_value"])
            wanted = [t for t in wanted if t not in self._limits]
            if wanted:
                await asyncio.sleep(0.1)
        for topic in wanted:  # not described: assume the broker's default
            self._limits[topic] = BROKER_MAX_MESSAGE_BYTES
        return {t: self._limits[t] for t in topics}

    async def partitions_for(self, topic: str) -> int:
        if topic not in self._partition_counts:
            described = await _admin_call(
                f"describing {topic}", self.admin.describe_topics, [topic]
            )
            parts = described[0].get("partitions") or []
            if not parts:
                raise LookupError(f"topic {topic!r} does not exist on {self.url}")
            self._partition_counts[topic] = len(parts)
        return self._partition_counts[topic]

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        return KafkaProducer(
            self.bootstrap,
            self.options,
            transactional_id,
            client=self._client,
            limits=self._limits,
        )

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
        return KafkaConsumer(
            self.bootstrap,
            group,
            topics,
            listener,
            self.options,
            isolation_level,
            copartitioned,
            client=self._client,
            instance_id=instance_id,
        )

    def follow(
        self, topic: str, partitions: int, *, only: int | None = None, start: StartAt = BEGINNING
    ) -> Follower:
        return KafkaFollower(
            self.bootstrap, topic, partitions, self.options, self._client, only, start
        )

    async def read_partitions(
        self,
        partitions: Iterable[TopicPartition],
        on_record: Callable[[Record], None],
        *,
        starts: Mapping[TopicPartition, int] | None = None,
        on_reset: Callable[[TopicPartition], None] | None = None,
    ) -> int:
        tps = [AioTP(tp.topic, tp.partition) for tp in partitions]
        first = {AioTP(tp.topic, tp.partition): offset for tp, offset in (starts or {}).items()}
        if not tps:
            return 0
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **self._client,
        )
        count = 0
        try:
            await consumer.start()
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            beginnings = await consumer.beginning_offsets(list(first)) if first else {}
            for tp, offset in list(first.items()):
                if not beginnings[tp] <= offset <= ends[tp]:
                    del first[tp]
                    if on_reset is not None:
                        on_reset(_tp(tp))
            remaining = {tp for tp in tps if ends[tp] > first.get(tp, 0)}
            await consumer.seek_to_beginning(*tps)
            for tp, offset in first.items():
                consumer.seek(tp, offset)
            while remaining:
                # short polls: an exactly-once changelog's tail may be a commit marker alone,
                # which no poll returns as a record
                batch = await consumer.getmany(*remaining, timeout_ms=100, max_records=10_000)
                for tp, msgs in batch.items():
                    for m in msgs:
                        if m.offset < ends[tp]:
                            on_record(_record(m))
                            count += 1
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        except KafkaError as exc:
            raise _broker_error(exc, "reading partitions") from exc
        finally:
            await consumer.stop()
        return count


def _topic_configs(spec: TopicSpec) -> dict[str, str]:
    configs = {"cleanup.policy": "compact"} if spec.compacted else {}
    if spec.max_message_bytes is not None:
        configs["max.message.bytes"] = str(spec.max_message_bytes)
    return configs
