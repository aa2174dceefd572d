"""``kafka://...?client=librdkafka``: the group consumer and the producer on librdkafka.

librdkafka (through ``confluent-kafka``) fetches, decompresses, batches and sends in its own
C threads, outside the interpreter's lock, so on a machine with a second core that work
leaves the event loop's: only taking the fetched records and handing over the outputs stay
on it. Everything else (creating topics, reading configs, followers, restoring changelogs)
is the aiokafka transport's, which this one extends (:class:`KafkaTransport`): the hot path
is what moves.

How the contract is met:

- ``consume()`` blocks, so it runs on a thread of its own; the rebalance callbacks run
  inside it, on that thread, and hand the revocation or assignment to the worker's
  listener on the event loop, waiting until it is done: a revoked partition's batch is
  committed before it is let go, and an assigned partition's state is restored before its
  first record is handed out (librdkafka returns its records only after the callback).
- Deliveries are noted by librdkafka's callbacks as :meth:`Producer.flush` serves them
  (on a worker thread); an acknowledgement awaited on its own flushes first.
- Exactly-once: ``send_offsets_to_transaction`` with the consumer's group metadata, so the
  broker fences a zombie by its group generation (KIP-447), which aiokafka cannot do.
- A static member (``instance_id``) leaves the group explicitly when it stops (librdkafka,
  like aiokafka, leaves that to the session timeout), through the aiokafka admin client.

URL options are the ``kafka://`` ones, plus ``delivery_timeout_ms`` (default 30000: how
long a flush waits for an unreachable broker before the worker retries the batch),
``fetch_max_wait_ms`` (default 100: how long the broker holds an empty fetch; librdkafka's
commits wait behind it on the same connection) and ``prefetch_kbytes`` (default 16384:
what librdkafka fetches ahead of the worker, at most).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import (
    Consumer as RdConsumer,
)
from confluent_kafka import (
    KafkaError as RdError,
)
from confluent_kafka import (
    KafkaException,
)
from confluent_kafka import (
    Producer as RdProducer,
)
from confluent_kafka import (
    TopicPartition as RdTP,
)

from packetflow.core.effects import Delivery
from packetflow.engine.transport.base import (
    BROKER_MAX_MESSAGE_BYTES,
    BrokerError,
    Committed,
    Consumer,
    Headers,
    Producer,
    RebalanceListener,
    Record,
    TopicPartition,
)
from packetflow.engine.transport.kafka import (
    KafkaTransport,
    _LeaveGroupV3,
    client_options,
    transaction_timeout_ms,
)
from packetflow.engine.transport.partitioner import group_of, partition_for_key
from packetflow.engine.transport.url import BrokerURL

log = logging.getLogger("packetflow.kafka")
_rdlog = logging.getLogger("packetflow.rdkafka")
CALL_TIMEOUT = 30.0  # s: a blocking librdkafka call (commit, committed, offsets, transactions)
_NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: no committed offset
POLL_SLICE = 0.02  # s: an idle fetch polls this long at a time, then lets calls through


def rd_client_config(url: BrokerURL | None, options: Mapping[str, str]) -> dict[str, Any]:
    """What every librdkafka client of this transport is given: id and security, from the
    same URL options as the aiokafka transport (checked by it), in librdkafka's names."""
    checked = client_options(url, options)  # raises BrokerURLError as for aiokafka
    protocol = checked["security_protocol"]
    out: dict[str, Any] = {
        "client.id": checked["client_id"],
        "logger": _rdlog,
        "security.protocol": protocol,
    }
    if protocol in ("SSL", "SASL_SSL"):
        for option, name in (
            ("ssl_cafile", "ssl.ca.location"),
            ("ssl_certfile", "ssl.certificate.location"),
            ("ssl_keyfile", "ssl.key.location"),
        ):
            if options.get(option):
                out[name] = options[option]
        if options.get("ssl_check_hostname", "true").lower() == "false":
            out["ssl.endpoint.identification.algorithm"] = "none"
    if protocol.startswith("SASL_"):
        out["sasl.mechanism"] = checked["sasl_mechanism"]
        out["sasl.username"] = checked["sasl_plain_username"]
        out["sasl.password"] = checked["sasl_plain_password"]
    return out


def _error(exc: BaseException, what: str) -> BrokerError:
    """A librdkafka failure as the engine's :class:`BrokerError` (fatal: fenced, or the
    producer can go on no more)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if isinstance(err, RdError):
        fatal = err.fatal() or err.code() in (RdError._FENCED, RdError.PRODUCER_FENCED)
        return BrokerError(f"{what}: {err.name()}: {err.str()}", fatal=fatal)
    return BrokerError(f"{what}: {type(exc).__name__}: {exc}")


def _tp(tp: RdTP) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _offset(tp: TopicPartition, offset: int, metadata: str | None) -> RdTP:
    """An offset to commit, with its metadata (the engine's crash-loop marks) if any."""
    if metadata:
        return RdTP(tp.topic, tp.partition, offset, metadata=metadata)
    return RdTP(tp.topic, tp.partition, offset)


async def _call(what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """A blocking librdkafka call on a worker thread; its failure as a BrokerError."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except (KafkaException, RuntimeError) as exc:
        raise _error(exc, what) from exc


class RdKafkaProducer(Producer):
    """librdkafka's producer: records go into its queue at ``send`` and out from its own
    threads; :meth:`flush` waits for every one's acknowledgement."""

    def __init__(
        self,
        config: dict[str, Any],
        options: Mapping[str, str],
        transactional_id: str | None,
        groups: Mapping[str, RdKafkaConsumer],
        limits: Mapping[str, int],
    ) -> None:
        conf = {
            **config,
            "acks": options.get("acks", "all"),
            "linger.ms": int(options.get("linger_ms", "5")),
            "batch.size": int(options.get("max_batch_size", str(256 * 1024))),
            "enable.idempotence": options.get("idempotence", "true") == "true"
            or transactional_id is not None,
            # a set-aside copy of the largest accepted record must fit (as in kafka.py)
            "message.max.bytes": max([BROKER_MAX_MESSAGE_BYTES, *limits.values()]) + 1024,
            "delivery.timeout.ms": int(options.get("delivery_timeout_ms", "30000")),
            "partitioner": "murmur2_random",  # Kafka's (and the other transports') key hash
        }
        if transactional_id is not None:
            conf["transactional.id"] = transactional_id
            txn = conf["transaction.timeout.ms"] = transaction_timeout_ms(options)
            # librdkafka refuses to start a producer whose deliveries outlive its transactions
            conf["delivery.timeout.ms"] = min(int(conf["delivery.timeout.ms"]), txn)
        self._conf = conf
        self._groups = groups
        self._producer: RdProducer | None = None
        self._failed: list[RdError] = []
        self._transactional = transactional_id is not None
        self._in_txn = False
        self._counts: dict[str, int] = {}  # partition counts of topics keyed by groups

    @property
    def _p(self) -> RdProducer:
        if self._producer is None:
            raise RuntimeError("producer not started")
        return self._producer

    async def start(self) -> None:
        try:
            self._producer = RdProducer(self._conf)
        except KafkaException as exc:
            raise _error(exc, "starting the producer") from exc
        # The cluster's metadata up front: it proves the broker reachable, and without it
        # librdkafka holds an idempotent producer's first records for about half a second.
        await _call("reaching the broker", self._p.list_topics, None, CALL_TIMEOUT)
        if self._transactional:
            await _call("starting transactions", self._p.init_transactions, CALL_TIMEOUT)

    async def stop(self) -> None:
        if self._producer is None:
            return
        try:
            await self.flush()
        finally:
            self._producer = None

    def queued(self) -> int:
        return 0 if self._producer is None else len(self._producer)  # librdkafka's queue

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Headers = (),
        partition: int | None = None,
        timestamp: int | None = None,
    ) -> _RdAck:
        if self._transactional and not self._in_txn:
            await self.begin()  # a transaction begins with the first record sent in it
        extra: dict[str, Any] = {}
        if partition is not None:
            extra["partition"] = partition
        if timestamp is not None:
            extra["timestamp"] = timestamp
        while True:
            try:
                return self._produce(topic, value, key, headers, extra)
            except BufferError:  # librdkafka's queue is full: let deliveries drain it
                await asyncio.to_thread(self._p.poll, 0.1)
            except KafkaException as exc:
                raise _error(exc, f"sending to {topic}") from exc

    def send_nowait(
        self, topic: str, value: bytes | None, key: bytes | None, headers: Headers
    ) -> _RdAck | None:
        """Into librdkafka's queue at once, unless a transaction must begin or the queue is
        full."""
        if self._transactional and not self._in_txn:
            return None
        try:
            return self._produce(topic, value, key, headers)
        except (BufferError, KafkaException):
            return None  # send() waits for room, or says what failed

    def _produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers,
        extra: Mapping[str, Any] | None = None,
    ) -> _RdAck:
        """One record into librdkafka's queue; raises BufferError when the queue is full."""
        ack = _RdAck(self, topic)
        if type(headers) is not list:
            headers = list(headers)
        rd_headers: Any = headers  # (str, bytes) pairs; its stubs want a list of a wider type
        if (
            key is not None
            and self.key_groups
            and topic in self.key_groups
            and (not extra or "partition" not in extra)
        ):  # librdkafka hashes whole keys only
            extra = {**(extra or {}), "partition": self._group_partition(topic, key)}
        self._p.produce(
            topic, value, key, on_delivery=ack.delivered, headers=rd_headers, **(extra or {})
        )
        return ack

    def _group_partition(self, topic: str, key: bytes) -> int:
        count = self._counts.get(topic)
        if count is None:  # from librdkafka's metadata, fetched once a topic
            try:
                meta = self._p.list_topics(topic, CALL_TIMEOUT).topics[topic]
            except KafkaException as exc:
                raise _error(exc, f"reading the partitions of {topic}") from exc
            if meta.error is not None or not meta.partitions:
                raise BrokerError(f"reading the partitions of {topic}: {meta.error}")
            count = self._counts[topic] = len(meta.partitions)
        return partition_for_key(group_of(key, self.key_groups[topic]), count)

    def _note_failure(self, err: RdError) -> None:
        self._failed.append(err)

    async def flush(self) -> None:
        producer = self._producer
        if producer is None:
            return
        timeout = self._conf["delivery.timeout.ms"] / 1000 + 5
        left = await _call("waiting for the broker to acknowledge", producer.flush, timeout)
        self._raise_failures()
        if left:
            raise BrokerError(f"{left} records not acknowledged within {timeout:g}s")

    def _raise_failures(self) -> None:
        failed, self._failed = self._failed, []
        purged = (RdError._PURGE_QUEUE, RdError._PURGE_INFLIGHT)
        real = [e for e in failed if e.code() not in purged]
        if real:
            err = real[0]
            raise BrokerError(
                f"the broker refused {len(real)} records: {err.name()}: {err.str()}",
                fatal=err.fatal(),
            )

    def discard(self) -> None:
        """Take back what librdkafka has not sent yet (a failed batch is being rewound)."""
        if self._producer is not None:
            with contextlib.suppress(KafkaException):
                self._producer.purge(in_queue=True, in_flight=False, blocking=True)
                self._producer.poll(0)  # serve the purged records' reports
        self._failed = []

    async def begin(self) -> None:
        if self._in_txn:
            return
        self._in_txn = True
        try:
            self._p.begin_transaction()
        except KafkaException as exc:
            self._in_txn = False
            raise _error(exc, "beginning a transaction") from exc

    async def send_offsets(
        self,
        offsets: dict[TopicPartition, int],
        group: str,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        consumer = self._groups.get(group)
        if consumer is None:
            raise BrokerError(f"no librdkafka consumer of group {group!r} to commit for")
        meta = metadata or {}
        if not self._in_txn:
            await self.begin()
        parts = [_offset(tp, o, meta.get(tp)) for tp, o in offsets.items()]
        await _call(
            "committing offsets in the transaction",
            self._p.send_offsets_to_transaction,
            parts,
            consumer.group_metadata(),
            CALL_TIMEOUT,
        )

    async def commit(self) -> None:
        if not self._in_txn:
            return  # nothing was sent: no transaction to commit
        self._in_txn = False
        try:
            await _call("committing the transaction", self._p.commit_transaction, CALL_TIMEOUT)
        finally:
            self._raise_failures()

    async def abort(self) -> None:
        if not self._in_txn:
            return
        self._in_txn = False
        try:
            await _call("aborting the transaction", self._p.abort_transaction, CALL_TIMEOUT)
        finally:
            self._failed = []


class _RdAck:
    """One record's delivery, noted by librdkafka's callback when a flush serves it."""

    __slots__ = ("_error", "_offset", "_partition", "_producer", "_topic")

    def __init__(self, producer: RdKafkaProducer, topic: str) -> None:
        self._producer = producer
        self._topic = topic
        self._offset = -1
        self._partition = -1
        self._error: RdError | None = None

    def delivered(self, err: RdError | None, msg: Any) -> None:
        if err is not None:
            self._error = err
            self._producer._note_failure(err)
            return
        self._partition = msg.partition()
        self._offset = msg.offset()

    def __await__(self) -> Generator[Any, None, Delivery]:
        if self._offset < 0 and self._error is None:
            yield from self._producer.flush().__await__()
        if self._error is not None:
            err = self._error
            raise BrokerError(f"sending to {self._topic}: {err.name()}: {err.str()}")
        return Delivery(self._topic, self._partition, self._offset)


class RdKafkaConsumer(Consumer):
    commit_in_background = True

    def __init__(
        self,
        transport: RdKafkaTransport,
        group: str,
        topics: Sequence[str],
        listener: RebalanceListener,
        options: Mapping[str, str],
        isolation_level: str,
        copartitioned: bool,
        instance_id: str | None,
    ) -> None:
        conf: dict[str, Any] = {
            **transport.rd_config,
            "group.id": group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": isolation_level,
            "partition.assignment.strategy": "range" if copartitioned else "roundrobin",
            "max.partition.fetch.bytes": int(options.get("max_partition_fetch_bytes", "1048576")),
            "session.timeout.ms": int(options.get("session_timeout_ms", "10000")),
            "heartbeat.interval.ms": int(options.get("heartbeat_interval_ms", "3000")),
            "max.poll.interval.ms": int(options.get("max_poll_interval_ms", "300000")),
            # how long the broker holds a fetch with nothing to return; a commit waits
            # behind such a fetch on its connection, so well below aiokafka's 500
            "fetch.wait.max.ms": int(options.get("fetch_max_wait_ms", "100")),
            # what librdkafka fetches ahead of the worker, at most (KiB, all partitions)
            "queued.max.messages.kbytes": int(options.get("prefetch_kbytes", "16384")),
        }
        if instance_id is not None:
            conf["group.instance.id"] = instance_id
        self._conf = conf
        self._transport = transport
        self._group = group
        self._topics = list(topics)
        self._listener = listener
        self._instance_id = instance_id
        self._consumer: RdConsumer | None = None
        # consume() and the rebalance callbacks it runs: one thread, always the same
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"pf-rdkafka-{group}")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._assigned: set[TopicPartition] = set()  # by the group
        self._incoming: set[TopicPartition] = set()  # assigned, not yet handed over
        self._ready: set[TopicPartition] = set()  # handed over: their records go out
        self._paused: set[TopicPartition] = set()  # by the worker
        self._closing = False
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        # records taken from librdkafka (which moved its positions past them) and not yet
        # handed to the worker: until then, lag and caught_up must not read the positions
        self._handing = False

    @property
    def _c(self) -> RdConsumer:
        if self._consumer is None:
            raise RuntimeError("consumer not started")
        return self._consumer

    def group_metadata(self) -> Any:
        """For a transaction's offsets: the group generation that fences zombies."""
        return self._c.consumer_group_metadata()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self._consumer = RdConsumer(self._conf)
            await self._run("reaching the broker", self._consumer.list_topics, None, CALL_TIMEOUT)
            self._consumer.subscribe(
                self._topics,
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_revoke,
            )
        except (KafkaException, BrokerError) as exc:
            await self._close()
            raise exc if isinstance(exc, BrokerError) else _error(exc, "joining the group") from exc
        self._transport.groups[self._group] = self

    # -- rebalances: on the consume thread ------------------------------------------------
    #
    # A revocation is handed to the worker's listener on the loop at once, and waited for:
    # the batch in flight is committed before the partitions go. An assignment is not
    # (librdkafka answers no offset request until the callback returns): the partitions are
    # assigned paused, and getmany hands them to the listener, and resumes them, before it
    # hands out any record of theirs.

    def _on_assign(self, consumer: RdConsumer, partitions: list[RdTP]) -> None:
        consumer.assign(partitions)
        parts = {_tp(tp) for tp in partitions}
        if parts:
            consumer.pause(partitions)
            self._assigned |= parts
            self._incoming |= parts

    def _on_revoke(self, consumer: RdConsumer, partitions: list[RdTP]) -> None:
        parts = {_tp(tp) for tp in partitions}
        ready = parts & self._ready
        self._assigned -= parts
        self._ready -= parts
        self._incoming -= parts
        if ready and not self._closing:
            loop = self._loop
            assert loop is not None
            done = asyncio.run_coroutine_threadsafe(self._listener.on_revoked(ready), loop)
            while not done.done() or not self._calls.empty():  # its consumer calls run here
                with contextlib.suppress(queue.Empty):
                    self._calls.get(timeout=0.02)()
            if done.exception() is not None:  # the listener failed: said; the group moves on
                log.error("revoking %s: %s", sorted(ready), done.exception())
        with contextlib.suppress(KafkaException):
            consumer.unassign()

    async def _run(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A blocking consumer call, always on the consume thread: librdkafka holds a commit
        made on another thread until that thread's poll returns, and serves one made inside
        a rebalance callback, as its documentation has it. The call is queued; whichever
        runs first takes it: the thread if idle (``_drain``), a fetch between two poll
        slices, or a revocation being handed over."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()

        def call() -> None:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:  # handed back to the awaiting coroutine
                loop.call_soon_threadsafe(_settle, future, None, exc)
            else:
                loop.call_soon_threadsafe(_settle, future, result, None)

        self._calls.put(call)
        loop.run_in_executor(self._thread, self._drain)
        try:
            return await future
        except (KafkaException, RuntimeError) as exc:
            raise _error(exc, what) from exc

    def _drain(self) -> None:
        """Run the queued consumer calls (on the consume thread)."""
        while True:
            try:
                call = self._calls.get_nowait()
            except queue.Empty:
                return
            call()

    async def _take_incoming(self) -> None:
        """Hand newly assigned partitions to the listener (state restored, offsets read),
        then let them be fetched."""
        parts, self._incoming = self._incoming & self._assigned, set()
        if not parts:
            return
        await self._listener.on_assigned(parts)
        self._ready |= parts & self._assigned
        go = [RdTP(tp.topic, tp.partition) for tp in parts if tp not in self._paused]
        if go:
            with contextlib.suppress(KafkaException):
                self._c.resume(go)

    # -- records ---------------------------------------------------------------------------

    def _fetch(self, max_records: int, timeout: float) -> list[Any]:
        """What is there now, up to ``max_records``; if nothing, the first record to arrive
        within ``timeout`` and what came with it. (``consume(n, timeout)`` alone would wait
        out its whole timeout for ``n`` records: a batch's latency, not the records'.) Polls
        in slices, running the calls queued for this thread in between (``_run``)."""
        consumer = self._c
        messages = consumer.consume(max_records, 0)
        if messages:
            self._handing = True
            return messages
        if timeout <= 0:
            return messages
        deadline = time.monotonic() + timeout
        while True:
            self._drain()  # calls queued meanwhile go first
            left = deadline - time.monotonic()
            if left <= 0:
                break
            first = consumer.poll(min(left, POLL_SLICE))
            if first is not None:
                self._handing = True
                if max_records == 1:
                    return [first]
                return [first, *consumer.consume(max_records - 1, 0)]
        return []

    async def getmany(self, timeout: float, max_records: int) -> dict[TopicPartition, list[Record]]:
        loop = asyncio.get_running_loop()
        try:
            messages = await loop.run_in_executor(
                self._thread, self._fetch, max(max_records, 1), max(timeout, 0.0)
            )
        except (KafkaException, RuntimeError) as exc:
            raise _error(exc, "fetching") from exc
        if self._incoming:
            await self._take_incoming()
        out: dict[TopicPartition, list[Record]] = {}
        assigned = self._ready
        for m in messages:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"fetching: {err.name()}: {err.str()}", fatal=True)
                log.warning("fetching: %s", err.str())
                continue
            # a message without an error has its topic, partition, offset and list headers
            tp = TopicPartition(m.topic(), m.partition())
            records = out.get(tp)
            if records is None:
                if tp not in assigned:
                    continue  # revoked meanwhile
                records = out[tp] = []
            records.append(
                Record(
                    tp.topic, tp.partition, m.offset(), m.key(), m.value(),
                    m.headers() or (), m.timestamp()[1],
                )
            )  # fmt: skip
        self._handing = False  # the worker has them now, before it next yields
        return out

    async def commit(
        self,
        offsets: dict[TopicPartition, int],
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        if not offsets:
            return
        meta = metadata or {}
        parts = [_offset(tp, o, meta.get(tp)) for tp, o in offsets.items()]
        await self._run("committing offsets", self._c.commit, offsets=parts, asynchronous=False)

    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, Committed]:
        parts = [RdTP(tp.topic, tp.partition) for tp in partitions]
        if not parts:
            return {}
        found = await self._run("reading committed offsets", self._c.committed, parts, CALL_TIMEOUT)
        out = {}
        for tp in found:
            offset = tp.offset if tp.offset >= 0 and tp.offset != _NO_OFFSET else None
            out[_tp(tp)] = Committed(offset, tp.metadata or "")
        return out

    async def bounds(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, tuple[int, int]]:
        consumer = self._c

        def read(tps: list[TopicPartition]) -> dict[TopicPartition, tuple[int, int]]:
            return {
                tp: consumer.get_watermark_offsets(
                    RdTP(tp.topic, tp.partition), CALL_TIMEOUT, cached=False
                )
                for tp in tps
            }

        tps = list(partitions)
        return await self._run("reading partition offsets", read, tps) if tps else {}

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._ready:
                try:
                    self._c.seek(RdTP(tp.topic, tp.partition, offset))
                except KafkaException as exc:
                    raise _error(exc, f"seeking {tp.topic}[{tp.partition}]") from exc

    def _position(self, tp: TopicPartition) -> int | None:
        (found,) = self._c.position([RdTP(tp.topic, tp.partition)])
        return found.offset if found.offset >= 0 else None

    async def lag(self) -> dict[TopicPartition, int]:
        # Read on the consume thread in one call, between two fetches: a fetch that returned
        # records has set _handing there before, so positions past records the worker has
        # not got are never read as caught up (read from the loop, a fetch could land between
        # the watermark and the position).
        def read() -> dict[TopicPartition, int]:
            ready = list(self._ready)
            if self._handing:  # librdkafka's positions are past records the worker has not got
                return dict.fromkeys(ready, 1)
            out = {}
            for tp in ready:
                try:
                    _, end = self._c.get_watermark_offsets(
                        RdTP(tp.topic, tp.partition), CALL_TIMEOUT, False
                    )
                    position = self._position(tp)
                    if position is None:
                        (found,) = self._c.committed([RdTP(tp.topic, tp.partition)], CALL_TIMEOUT)
                        position = found.offset if found.offset >= 0 else 0
                except KafkaException:
                    # not known (a topic just made, a broker busy): not known to be caught up
                    # either, so a wait for idleness does not end on it
                    out[tp] = 1
                    continue
                out[tp] = max(end - position, 0)
            return out

        try:
            return await self._run("reading partition offsets", read)
        except BrokerError:
            return dict.fromkeys(self._ready, 1)

    async def caught_up(self, tp: TopicPartition) -> bool:
        if tp not in self._ready or self._handing:
            return False
        try:
            # as of the last fetch (for read_committed: the last stable offset)
            _, end = self._c.get_watermark_offsets(RdTP(tp.topic, tp.partition), cached=True)
            position = self._position(tp)
        except KafkaException:
            return False
        return end >= 0 and position is not None and position >= end

    def pause(self, partitions: Iterable[TopicPartition]) -> None:
        owned = [tp for tp in partitions if tp in self._assigned]
        self._paused.update(owned)
        if owned:
            self._c.pause([RdTP(tp.topic, tp.partition) for tp in owned])

    def resume(self, partitions: Iterable[TopicPartition]) -> None:
        owned = [tp for tp in partitions if tp in self._assigned]
        self._paused.difference_update(owned)
        ready = [RdTP(tp.topic, tp.partition) for tp in owned if tp in self._ready]
        if ready:
            self._c.resume(ready)

    async def stop(self) -> None:
        # The worker has committed its last batch: leave without handing the revocation
        # over, like the aiokafka consumer.
        self._closing = True
        member = None
        with contextlib.suppress(Exception):
            member = self._c.memberid()
        await self._close()
        self._transport.groups.pop(self._group, None)
        if self._instance_id is not None and member:
            await self._transport.leave_as_static_member(self._group, member, self._instance_id)

    async def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            loop = asyncio.get_running_loop()
            with contextlib.suppress(Exception):
                await loop.run_in_executor(self._thread, consumer.close)
        self._thread.shutdown(wait=False)


class RdKafkaTransport(KafkaTransport):
    """The aiokafka transport with its group consumer and producer on librdkafka."""

    def __init__(
        self,
        url: str,
        bootstrap: str,
        options: dict[str, str] | None = None,
        parsed: BrokerURL | None = None,
    ) -> None:
        super().__init__(url, bootstrap, options, parsed)
        parsed = parsed or BrokerURL.parse(url)
        self.rd_config = {
            "bootstrap.servers": bootstrap,
            **rd_client_config(parsed, self.options),
        }
        self.groups: dict[str, RdKafkaConsumer] = {}  # for transactions' group metadata

    def producer(self, *, transactional_id: str | None = None) -> Producer:
        return RdKafkaProducer(
            self.rd_config, self.options, transactional_id, self.groups, self._limits
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
        return RdKafkaConsumer(
            self,
            group,
            topics,
            listener,
            self.options,
            isolation_level,
            copartitioned,
            instance_id,
        )

    async def leave_as_static_member(self, group: str, member: str, instance_id: str) -> None:
        """LeaveGroup v3 for a static member, so its partitions move on at once."""
        try:
            admin = self.admin
            node = await asyncio.wait_for(admin.find_coordinator(group), 5.0)
            await asyncio.wait_for(
                admin._send_request_to_node(node, _LeaveGroupV3(group, member, instance_id)), 5.0
            )
        except Exception as exc:  # best effort: the session timeout still frees them
            log.warning("static member %s could not leave the group: %s", instance_id, exc)
