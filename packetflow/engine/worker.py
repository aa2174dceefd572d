"""Worker: runs a topology's reactors against a broker, batch by batch, at least once.

Lifecycle (aiokafka style)::

    async with Worker(topology, "kafka://127.0.0.1:9092") as worker:
        await worker.run()          # until worker.request_stop() or a signal

Each batch: fetch up to ``max_batch`` records, process every partition's records in order
(partitions concurrently), let time-driven agents act (windows close as time passes), queue
state changes on the changelogs, wait for the broker to acknowledge every produced record,
then commit the consumed offsets (on ``kafka://`` that commit travels while the next batch
is fetched and processed; the one after waits for it). With
``processing_guarantee="exactly_once"`` all of that is one Kafka transaction, the offsets
committed inside it. On revoke, the batch in flight finishes and its commit lands first; on
assign, state is restored from the changelog before any record of that partition is processed.

A broker that fails a batch (unreachable, refusing) is no record's fault: the worker logs it
once, rewinds to the last commit (state restored, the transaction aborted) and tries again
with backoff, and says when it resumed. What no ``try`` can catch (a process killed while
handling a record: out of memory, a crash in a native library, a hang cut short) is caught by
the **crash-loop breaker**: every commit carries an "in flight" mark, so the next owner of a
partition knows that a worker died there. After ``crash_loop_limit - 1`` such deaths it takes
the partition one record at a time, and the record a worker dies on then is set aside as
``crash-loop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import uuid
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from packetflow.engine.agent import current_agents
from packetflow.engine.breaker import Breaker
from packetflow.engine.clock import WALL_CLOCK, Clock
from packetflow.engine.metrics import WorkerMetrics
from packetflow.engine.outage import Outage, quiet_aiokafka
from packetflow.engine.processor import Processor
from packetflow.engine.security import Guard, RevocationFollower, Security
from packetflow.engine.topology import Topology, TopologyError, default_broker_url
from packetflow.engine.transport import (
    BrokerError,
    Committed,
    Consumer,
    Follower,
    Producer,
    RebalanceListener,
    Record,
    TopicPartition,
    Transport,
    open_transport,
)

log = logging.getLogger("packetflow.worker")
security_log = logging.getLogger("packetflow.security")

HELD_POLL = 0.01  # s: how long a fetch waits while records are held back for a full buffer
RETRY_BACKOFF = (0.5, 10.0)  # s: first and longest wait before a failed batch is tried again


class Worker(RebalanceListener):
    """One process's share of a topology: a group consumer, a producer and state stores."""

    def __init__(
        self,
        topology: Topology,
        broker: str | Transport | None = None,
        *,
        max_batch: int = 5000,
        poll_timeout: float = 0.2,
        clock: Clock = WALL_CLOCK,
        security: Security | None = None,
        tick_interval: float = 0.1,
        instance_id: str | None = None,
    ) -> None:
        """``security`` replaces the topology's own settings for this worker (TestDriver).

        ``tick_interval``: how often (on ``clock``) time-driven agents such as windows get to
        act when no record arrives. ``instance_id`` names this worker among the topology's
        (default ``$PACKETFLOW_INSTANCE_ID``, else random). Given explicitly, it makes the
        worker a static member of the consumer group: restarted with the same id, it takes
        its partitions back at once instead of after a rebalance; under exactly-once it is
        also the transactional id's suffix, so a restarted worker aborts what its crashed
        predecessor left open.
        """
        if not topology.consumers():
            raise ValueError(f"topology {topology.name!r} has no reactors or agents to run")
        self.topology = topology
        self.transport = (
            broker
            if isinstance(broker, Transport)
            else open_transport(broker or default_broker_url())
        )
        self.max_batch = max_batch
        self.poll_timeout = poll_timeout
        self.clock = clock
        self.security = security or topology.security
        self.tick_interval = tick_interval
        explicit = instance_id or os.environ.get("PACKETFLOW_INSTANCE_ID")
        self.instance_id = explicit or uuid.uuid4().hex[:12]
        self.static = bool(explicit)  # a static group member (KIP-345)
        self.metrics = WorkerMetrics()
        self.outage = Outage(f"broker {self.transport.url}")
        self.breaker = Breaker(topology.crash_loop_limit, max_batch)
        self._watch_task: asyncio.Task[None] | None = None
        self.guard: Guard | None = None
        self._revocations: RevocationFollower | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._processor: Processor | None = None
        self._lock = asyncio.Lock()
        self._committing: asyncio.Task[None] | None = None
        self._assigned: set[TopicPartition] = set()
        self._consumed: dict[TopicPartition, int] = {}  # next offset after what was processed
        self._committed: dict[TopicPartition, int] = {}
        self._paused_topics: set[str] = set()
        # records fetched for a full blocking buffer, offered once it has room (partition paused)
        self._held: dict[TopicPartition, list[Record]] = {}
        self._table_followers: list[tuple[Follower, str]] = []  # (follower, agent name)
        self._followed: list[tuple[str, list[Record]]] = []  # read in the background (kafka)
        self._table_task: asyncio.Task[None] | None = None
        self._last_tick: float | None = None
        self._stopping = False
        self._started = False
        self._retrying = False
        self._failure: BaseException | None = None  # from a rebalance callback, raised by step

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create missing topics, join the consumer group."""
        topology = self.topology
        sealer = self.security.sealer(in_process=self.transport.in_process)
        internal = sorted(t.intent_type for t in topology.intent_types.values() if t.internal)
        if internal and sealer is None:
            raise TopologyError(
                f"topology {topology.name!r} has internal intent types ({', '.join(internal)}) "
                "and this worker has no worker secret to seal and verify them: run "
                "'packetflow caps secret' (it writes worker.secret to the keys directory) and "
                "give every worker of the topology the same file"
            )
        await self.transport.start()
        quiet_aiokafka(self.outage)
        specs = topology.topic_specs()
        await self.transport.ensure_topics(specs)
        limits = await self.transport.record_limits([spec.name for spec in specs])
        self._producer = self.transport.producer(
            transactional_id=f"{topology.group_id}.{self.instance_id}"
            if topology.exactly_once
            else None
        )
        await self._producer.start()
        guard = self.guard = Guard(topology.hierarchy, self.security, self.clock, sealer)
        self._revocations = RevocationFollower(
            self.transport,
            topology.physical(topology.revocations_topic),
            self._apply_revocations,
            guard.refresh_keys,
        )
        await self._revocations.start()
        self._processor = Processor(
            topology,
            self._producer,
            self.clock,
            self.metrics,
            self.guard,
            caught_up=self._caught_up,
            owned=lambda: self._assigned,
            pause=self._pause_topic,
            resume=self._resume_topic,
            limits=limits,
        )
        await self._start_tables(self._processor)
        self._consumer = self.transport.consumer(
            topology.group_id,
            [topology.physical(t) for t in topology.source_topics()],
            self,
            isolation_level="read_committed" if topology.exactly_once else "read_uncommitted",
            copartitioned=topology.copartitioned,
            instance_id=self.instance_id if self.static else None,
        )
        await self._consumer.start()
        if not self.transport.in_process:
            self._watch_task = asyncio.create_task(self._watch_outage())
        for buffered in self._processor.buffered.values():
            buffered.start()
        self._started = True
        log.info("worker for %s started on %s", self.topology.name, self.transport.url)
        self._warn_about_security(self.guard)

    def _apply_revocations(self, records: list[Record]) -> None:
        guard = self.guard
        if guard is None:
            return
        self.metrics.revocations += len(records)
        for rev in guard.apply(records):
            security_log.info(
                "revocation applied: %s %s (%s)", rev.kind, rev.subject, rev.reason or "-"
            )

    async def _start_tables(self, processor: Processor) -> None:
        """Read what agents follow (global tables) to its end, then keep following it."""
        for name, spec in self.topology.agents.items():
            for topic in spec.followed(self.topology.names):
                physical = self.topology.physical(topic)
                follower = self.transport.follow(
                    physical, await self.transport.partitions_for(physical)
                )
                await follower.start()
                self._table_followers.append((follower, name))
                agent = processor.agents[name]
                for record in await follower.catch_up():
                    agent.follow(record)
        waiting = [f for f, _ in self._table_followers if not f.immediate]
        if waiting:
            self._table_task = asyncio.create_task(self._follow_tables())

    async def _follow_tables(self) -> None:
        """Background task (kafka://): queue followed records for the next step to apply."""
        while True:
            for follower, name in self._table_followers:
                try:
                    records = await follower.poll(0.2)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep following through a broker hiccup
                    log.warning("following tables: %s: %s", type(exc).__name__, exc)
                    await asyncio.sleep(1.0)
                    continue
                if records:
                    self._followed.append((name, records))

    def _apply_followed(self, processor: Processor) -> None:
        for follower, name in self._table_followers:
            if follower.immediate:
                records = follower.poll_nowait()
                if records:
                    self._followed.append((name, records))
        followed, self._followed = self._followed, []
        for name, records in followed:
            agent = processor.agents[name]
            for record in records:
                agent.follow(record)

    def _warn_about_security(self, guard: Guard) -> None:
        name = self.topology.name
        if guard.allow_unsigned:
            security_log.warning(
                "topology %s accepts UNSIGNED capabilities: anyone who can produce to its "
                "topics can claim any capability (allow_unsigned=True; for tests and demos)",
                name,
            )
        if not guard.keys:
            where = (
                f" (no *.pub in {self.security.keys_dir or 'the keys directory'})"
                if self.security.keys_from_dir
                else ""
            )
            security_log.warning(
                "topology %s trusts no token signing key%s: every signed token is refused",
                name,
                where,
            )
        else:
            security_log.info(
                "topology %s trusts token keys %s", name, ", ".join(sorted(guard.keys))
            )

    async def stop(self) -> None:
        """Finish the batch in flight, commit, leave the group, close connections."""
        self._stopping = True
        if not self._started:
            return
        self._started = False
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None
        async with self._lock:
            processor = self._processor
            if processor is not None and processor.buffered:
                for buffered in processor.buffered.values():
                    await buffered.stop()  # the intent in hand finishes; the rest is re-read
                if self._consumer is not None:
                    await self._commit(self._consumer, processor)
            with contextlib.suppress(BrokerError):
                await self._settle_commit()  # the last batch's offsets land before we leave
                if self._consumer is not None:
                    # a clean hand-over: whoever takes these partitions counts no death here
                    await self._commit_clean(self._consumer, set(self._assigned))
        if self._table_task is not None:
            self._table_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._table_task
            self._table_task = None
        for follower, _ in self._table_followers:
            await follower.stop()
        self._table_followers = []
        if self._revocations is not None:
            await self._revocations.stop()
            self._revocations = None
        if self._consumer is not None:
            await self._consumer.stop()
        if self._producer is not None:
            await self._producer.stop()
        await self.transport.stop()
        log.info("worker for %s stopped", self.topology.name)

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after the current batch (safe from signal handlers)."""
        self._stopping = True

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def run(self) -> None:
        """Process batches until :meth:`request_stop` (or a signal, after ``handle_signals``).

        A batch the broker fails is retried (see the module docstring); only a fenced
        producer (another worker took this one's transactional id) ends the run.
        """
        delay = RETRY_BACKOFF[0]
        while not self._stopping:
            try:
                await self.step(self.poll_timeout)
            except BrokerError as exc:
                if exc.fatal:
                    log.error(
                        "this worker was fenced (another worker took its partitions over while "
                        "it stalled, or its transaction outlived transaction_timeout_ms): it "
                        "stops without committing; restart it (%s)",
                        exc,
                    )
                    raise
                self.metrics.broker_retries += 1
                self.outage.failing(str(exc))
                self._retrying = True  # not idle: what failed is to be done again
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_BACKOFF[1])
                with contextlib.suppress(BrokerError):  # still failing: the next step says
                    await self.rewind()
            else:
                delay = RETRY_BACKOFF[0]
                self._retrying = False

    async def rewind(self) -> None:
        """Go back to the last commit: a failed batch's effects and state are forgotten (the
        transaction aborted), state restored from the changelogs, records read again."""
        consumer, processor = self._require()
        async with self._lock:
            if self.topology.exactly_once:
                with contextlib.suppress(BrokerError):
                    await processor.producer.abort()
            processor.producer.discard()
            task, self._committing = self._committing, None
            if task is not None:
                with contextlib.suppress(BrokerError):
                    await task
            parts = set(self._assigned)
            committed = await consumer.committed(parts)
            starts, _ = await self._starts(consumer, parts, committed)
            await self._drop(processor, parts)
            await self._restore(processor, parts)
            consumer.seek(starts)
            self._consumed = {}
            self._committed = dict(starts)
        log.info("rewound %s to the last commit", _fmt(parts))

    async def _watch_outage(self) -> None:
        """While an outage is under way, ask the broker every second whether it is back."""
        while True:
            await asyncio.sleep(1.0)
            if self.outage.active:
                with contextlib.suppress(BrokerError):
                    await self.transport.ping()
                    self.outage.ok()

    def handle_signals(self) -> None:
        """Stop gracefully on SIGINT and SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    # -- the loop ------------------------------------------------------------------------

    async def step(self, timeout: float = 0.0) -> int:
        """Fetch and fully process one batch; returns how many records it held."""
        consumer, processor = self._require()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError(f"worker cannot go on: {failure}") from failure
        wanted = self.max_batch
        if self._held:
            timeout = min(timeout, HELD_POLL)  # held records go in as soon as there is room
            wanted = max(wanted - sum(map(len, self._held.values())), 1)  # held + fetched: a batch
        batch = await consumer.getmany(timeout, wanted)
        if self._revocations is not None:
            self._revocations.poll_now()  # memory://: a revocation before these records counts
        current_agents.set(processor.agents)  # for table lookups inside reactors
        async with self._lock:
            self._apply_followed(processor)
            batch = {tp: recs for tp, recs in batch.items() if tp in self._assigned and recs}
            was_held, self._held = self._held, {}
            for tp, records in was_held.items():  # what was held back goes first
                fetched = batch.get(tp)
                batch[tp] = records + fetched if fetched else records
            breaker = self.breaker
            if breaker.poisoned and batch:
                await self._set_aside_poison(processor, batch)
            if breaker.probing:
                for tp in list(breaker.probing):
                    if tp not in batch and await consumer.caught_up(tp):
                        breaker.processed(tp, breaker.window)  # nothing left there to probe
            if processor.buffered or breaker.probing or was_held:
                batch = self._admit(consumer, processor, batch, was_held)
            tick = self._tick_due(bool(batch))
            if not batch and not tick and not self._safe_offsets(processor):
                return 0
            if breaker.probing:
                await self._settle_commit()  # the mark names the one record about to run
            count = sum(len(r) for r in batch.values())
            try:
                if len(batch) == 1 or not processor.concurrent:
                    for records in batch.values():
                        await processor.process(records)
                elif batch:
                    await asyncio.gather(*(processor.process(r) for r in batch.values()))
                for tp, records in batch.items():
                    self._consumed[tp] = records[-1].offset + 1
                    breaker.processed(tp, len(records))
                if tick:
                    await processor.tick(self._owned_of)
                await self._commit(consumer, processor)
            except BrokerError:
                raise  # run() rewinds and retries
            except BaseException:
                if self.topology.exactly_once:
                    await self._abort(processor)
                raise
            if batch:
                self.metrics.consumed += count
                self.metrics.batches += 1
                self.outage.ok(processed=True)
            return count

    async def _set_aside_poison(
        self, processor: Processor, batch: dict[TopicPartition, list[Record]]
    ) -> None:
        """Set aside the records workers kept dying on (see :class:`Breaker`)."""
        for tp, records in list(batch.items()):
            deaths = self.breaker.poison(tp, records[0].offset)
            if deaths is None:
                continue
            record = records[0]
            log.error(
                "%s/%d/%d: %d workers died processing this record; set aside as crash-loop",
                tp.topic, tp.partition, record.offset, deaths,
            )
            await processor.dead_letter(
                record,
                "crash-loop",
                f"{deaths} workers died while processing this record (out of memory, a crash "
                "in native code, a hang or a kill); set aside so its partition can go on",
            )
            self.metrics.crash_loops += 1
            self._consumed[tp] = record.offset + 1
            rest = records[1:]
            if rest:
                batch[tp] = rest
            else:
                del batch[tp]

    def _admit(
        self,
        consumer: Consumer,
        processor: Processor,
        batch: dict[TopicPartition, list[Record]],
        was_held: dict[TopicPartition, list[Record]],
    ) -> dict[TopicPartition, list[Record]]:
        """Cut each partition's records to what may run now: one record in the whole worker
        while the crash-loop breaker probes, else the room its topic's blocking buffers have.

        The rest is held back, its partition paused, and goes first next time: the batch
        loop never waits for a slow reactor (other topics, commits, a stop or a rebalance
        would wait with it), and held plus fetched records stay within max_batch.
        """
        held: dict[TopicPartition, list[Record]] = {}
        probe = self.breaker.next_probe(tp for tp, records in batch.items() if records)
        if probe is not None:
            # one record in the whole worker, committed on its own: a death now is its doing
            for tp, records in batch.items():
                keep = 1 if tp == probe else 0
                if len(records) > keep:
                    held[tp] = records[keep:]
                    batch[tp] = records[:keep]
        rooms: dict[str, int] = {}
        for buffered in processor.buffered.values():
            room = buffered.room
            if room is not None:
                topic = buffered.source_topic
                rooms[topic] = min(room, rooms.get(topic, room))
        for topic, room in rooms.items():
            tps = sorted(tp for tp in batch if tp.topic == topic)
            give = dict.fromkeys(tps, 0)
            while room > 0:  # share the room out evenly, each partition's records in order
                wanting = [tp for tp in tps if give[tp] < len(batch[tp])]
                if not wanting:
                    break
                share = max(room // len(wanting), 1)
                for tp in wanting:
                    n = min(share, len(batch[tp]) - give[tp], room)
                    give[tp] += n
                    room -= n
            for tp in tps:
                records = batch[tp]
                if give[tp] < len(records):
                    held[tp] = records[give[tp] :] + held.get(tp, [])
                    batch[tp] = records[: give[tp]]
        self._held = held
        if held:
            consumer.pause(held)
        drained = [tp for tp in was_held if tp not in held and tp.topic not in self._paused_topics]
        if drained:
            consumer.resume(drained)
        return {tp: records for tp, records in batch.items() if records}

    def _owned_of(self, topic: str) -> set[int]:
        return {tp.partition for tp in self._assigned if tp.topic == topic}

    def _tick_due(self, had_batch: bool) -> bool:
        """Whether time-driven agents should act now: after a batch, or every tick_interval."""
        processor = self._processor
        if processor is None or not (processor.tickers or processor.timers):
            return False
        now = self.clock.time()
        if had_batch or self._last_tick is None or now - self._last_tick >= self.tick_interval:
            self._last_tick = now
            return True
        return False

    async def _commit(self, consumer: Consumer, processor: Processor) -> None:
        """Make the batch's effects durable, then commit what is safe (or all in one txn)."""
        offsets = self._safe_offsets(processor)  # before the flush that covers their effects
        await processor.write_changelogs()
        producer = processor.producer
        marks = self.breaker.marks(offsets)
        if self.topology.exactly_once:
            if offsets:
                await producer.send_offsets(offsets, self.topology.group_id, marks)
            await producer.commit()  # flushes; a no-op when nothing was sent
            self._committed.update(offsets)
            self.metrics.commits += 1 if offsets else 0
            self.metrics.emitted = processor.interpreter.emitted
            return
        await producer.flush()  # every record sent so far is acknowledged
        self.metrics.emitted = processor.interpreter.emitted
        await self._settle_commit()  # commits land in order, and their errors surface here
        if not offsets:
            return
        self._committed.update(offsets)
        if consumer.commit_in_background:
            # The next batch is fetched and processed while this commit travels: at-least-once
            # holds (its records are acknowledged), and a crash before it lands only repeats it.
            self._committing = asyncio.create_task(self._commit_offsets(consumer, offsets, marks))
        else:
            await self._commit_offsets(consumer, offsets, marks)

    async def _commit_clean(self, consumer: Consumer, partitions: set[TopicPartition]) -> None:
        """Commit again where ``partitions`` stand, without the in-flight mark: they are let
        go cleanly (what is processed but not yet committed stays for the next owner)."""
        offsets = {tp: self._committed[tp] for tp in partitions if tp in self._committed}
        if offsets:
            await consumer.commit(offsets)

    def _safe_offsets(self, processor: Processor) -> dict[TopicPartition, int]:
        """Offsets to commit: what was processed, held back before what is still buffered,
        where that moved past the last commit (empty: nothing new is safe to commit)."""
        out = {}
        buffered = processor.buffered.values()
        for tp, consumed in self._consumed.items():
            if tp not in self._assigned:
                continue
            safe = consumed
            for b in buffered:
                if b.source_topic == tp.topic:
                    safe = b.safe_offset(tp, safe)
            if safe > self._committed.get(tp, -1):
                out[tp] = safe
        return out

    async def _abort(self, processor: Processor) -> None:
        with contextlib.suppress(Exception):
            await processor.producer.abort()
        log.error(
            "exactly-once transaction aborted: this worker's state may be ahead of the "
            "committed changelog, so it stops; a restarted worker resumes from the last commit"
        )

    async def _commit_offsets(
        self,
        consumer: Consumer,
        offsets: dict[TopicPartition, int],
        marks: dict[TopicPartition, str],
    ) -> None:
        await consumer.commit(offsets, marks)
        self.metrics.commits += 1

    async def _settle_commit(self) -> None:
        """Wait for the commit still travelling, if any; raise its error."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    async def _caught_up(self, tp: TopicPartition) -> bool:
        consumer = self._consumer
        return consumer is not None and tp in self._assigned and await consumer.caught_up(tp)

    def _pause_topic(self, topic: str) -> None:
        self._paused_topics.add(topic)
        if self._consumer is not None:
            self._consumer.pause(tp for tp in self._assigned if tp.topic == topic)

    def _resume_topic(self, topic: str) -> None:
        self._paused_topics.discard(topic)
        if self._consumer is not None:  # partitions holding records stay paused until they went in
            self._consumer.resume(
                tp for tp in self._assigned if tp.topic == topic and tp not in self._held
            )

    def _require(self) -> tuple[Consumer, Processor]:
        if self._consumer is None or self._processor is None:
            raise RuntimeError("worker not started: use 'async with Worker(...)' or await start()")
        return self._consumer, self._processor

    # -- rebalance -----------------------------------------------------------------------

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight has finished by now
            processor = self._processor
            consumer = self._consumer
            if processor is not None and consumer is not None:
                if processor.buffered:
                    for buffered in processor.buffered.values():
                        await buffered.revoke(partitions)  # re-read by the next owner
                    await self._commit(consumer, processor)
                with contextlib.suppress(BrokerError):  # the group moved on: nothing to clean
                    await self._settle_commit()  # its offsets are committed before we let go
                    await self._commit_clean(consumer, partitions)
            self._assigned -= partitions
            if processor is not None:
                await self._drop(processor, partitions)
            for tp in partitions:
                self._consumed.pop(tp, None)
                self._committed.pop(tp, None)
            self.breaker.forget(partitions)
        log.info("revoked %s", _fmt(partitions))

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        processor, consumer = self._processor, self._consumer
        try:
            if processor is not None:
                await self._restore(processor, partitions)
            if consumer is not None:
                await self._mark_assigned(consumer, partitions)
        except Exception as exc:
            # A partition whose state cannot be restored must not be processed, nor held
            # idle by this worker: the next step stops it, so its partitions move on.
            self._failure = exc
            log.error("cannot take %s: %s", _fmt(partitions), exc)
            return
        self._assigned |= partitions
        if self._consumer is not None and self._paused_topics:
            self._consumer.pause(tp for tp in partitions if tp.topic in self._paused_topics)
        log.info("assigned %s", _fmt(partitions))

    async def _mark_assigned(self, consumer: Consumer, partitions: set[TopicPartition]) -> None:
        """Read where new partitions stand, judge their crash-loop marks, and commit ours."""
        committed = await consumer.committed(partitions)
        starts, ends = await self._starts(consumer, partitions, committed)
        marks = self.breaker.assigned(committed, starts, ends)
        for tp, note in self.breaker.notes(partitions):
            log.warning("%s[%d]: %s", tp.topic, tp.partition, note)
        await consumer.commit({tp: starts[tp] for tp in marks}, marks)  # our death counts too
        self._committed.update(starts)

    async def _starts(
        self,
        consumer: Consumer,
        partitions: set[TopicPartition],
        committed: dict[TopicPartition, Committed],
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """Where each partition is read from (its committed offset, else its beginning),
        and where it ends now."""
        bounds = await consumer.bounds(partitions)
        starts = {}
        for tp in partitions:
            offset = committed[tp].offset
            starts[tp] = bounds[tp][0] if offset is None else offset
        return starts, {tp: end for tp, (_, end) in bounds.items()}

    async def _drop(self, processor: Processor, partitions: set[TopicPartition]) -> None:
        """Forget what this worker holds of ``partitions`` (records, buffers, state)."""
        for tp in partitions:
            self._held.pop(tp, None)  # never processed, so never committed: re-read
        for buffered in processor.buffered.values():
            await buffered.revoke(partitions)
            buffered.release(partitions)  # held back that commit; now forgotten
        for store in processor.all_stores.values():
            for tp in partitions:
                if tp.topic == store.source_topic:
                    store.close_partition(tp.partition)
        for name, agent in processor.agents.items():
            mine = _partitions_of(
                self.topology.physical(self.topology.agents[name].topic), partitions
            )
            if mine:
                timers = processor.timers.get(name)
                if timers is not None:
                    timers.revoked(mine)
                await agent.revoked(mine)

    async def _restore(self, processor: Processor, partitions: set[TopicPartition]) -> None:
        """Rebuild the state of ``partitions`` from the changelogs, then tell the agents."""
        for (owner, _), store in processor.all_stores.items():
            mine = _partitions_of(store.source_topic, partitions)
            if not mine:
                continue
            for p in mine:
                store.open_partition(p)
            restored = await self.transport.read_partitions(
                [TopicPartition(store.changelog_topic, p) for p in sorted(mine)],
                store.restore,
            )
            self.metrics.restored[owner] += restored
        for name, agent in processor.agents.items():
            mine = _partitions_of(
                self.topology.physical(self.topology.agents[name].topic), partitions
            )
            if mine:
                timers = processor.timers.get(name)
                if timers is not None:
                    timers.assigned(mine)
                await agent.assigned(mine)

    # -- inspection ----------------------------------------------------------------------

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def state(self, reactor: str, key: str | bytes | None) -> Any:
        """The current state of ``reactor`` (or agent: open windows, a table row) for ``key``
        on this worker (None if not here)."""
        _, processor = self._require()
        raw = key.encode() if isinstance(key, str) else key
        if reactor in processor.agents:
            return processor.agents[reactor].state(raw)
        if reactor not in processor.stores:
            raise KeyError(f"{reactor!r} is not a stateful reactor of {self.topology.name!r}")
        return processor.stores[reactor].find(raw)

    def states(self, reactor: str) -> dict[str | None, Any]:
        """Every key's state of ``reactor`` held by this worker."""
        _, processor = self._require()
        store = processor.stores[reactor]
        return {
            (k.decode() if k is not None else None): v
            for p in store.partitions
            for k, v in store.items(p)
        }

    async def lag(self) -> int:
        consumer, _ = self._require()
        return sum((await consumer.lag()).values())

    async def stream_metrics(self) -> dict[str, dict[str, Any]]:
        """Per reactor and agent: processed, errors, dropped, buffer depth, consumer lag of
        its source partitions here, and processing latency (ms from fetch to done)."""
        consumer, _ = self._require()
        lag = await consumer.lag()
        m = self.metrics
        out: dict[str, dict[str, Any]] = {}
        for name, spec in [(c.name, c) for c in self.topology.consumers()]:
            topic = self.topology.physical(spec.topic)
            histogram = m.latency.get(name)
            out[name] = {
                "processed": m.processed[name],
                "errors": m.errors[name],
                "dropped": m.dropped[name],
                "late": int(m.registry.value("packetflow_window_late_total", window=name)),
                "buffer_depth": m.buffered.get(name, 0),
                "buffer_peak": m.buffered_peak.get(name, 0),
                "lag": sum(n for tp, n in lag.items() if tp.topic == topic),
                "latency_ms": histogram.snapshot() if histogram else None,
            }
        return out

    async def wait_idle(self, timeout: float = 30.0, settle: float = 0.0) -> None:
        """Wait until this worker holds partitions and has consumed everything in them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self._assigned and await self._quiet():
                if settle <= 0:
                    return
                await asyncio.sleep(settle)
                if await self._quiet():
                    return
            if loop.time() > deadline:
                raise TimeoutError(f"worker not idle after {timeout}s (lag {await self.lag()})")
            await asyncio.sleep(0.05)

    async def _quiet(self) -> bool:
        """No batch in flight, none finished while lag was measured, and nothing left to read."""
        # lag() awaits the broker: a batch can be fetched (moving positions to the end) and
        # even completed meanwhile, so check the lock and the batch count on both sides.
        if self._lock.locked() or self._retrying or not self.buffers_idle():
            return False
        batches = self.metrics.batches
        lag = await self.lag()
        return (
            lag == 0
            and not self._lock.locked()
            and self.metrics.batches == batches
            and self.buffers_idle()
        )

    def buffers_idle(self) -> bool:
        """Buffered (backpressured) reactors hold nothing, and what they did is committed."""
        processor = self._processor
        if processor is None or not processor.buffered:
            return True
        return (
            not self._held
            and all(b.idle for b in processor.buffered.values())
            and not self._safe_offsets(processor)
        )


def _partitions_of(topic: str, partitions: Iterable[TopicPartition]) -> set[int]:
    return {tp.partition for tp in partitions if tp.topic == topic}


def _fmt(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
