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
import functools
import logging
import os
import signal
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from packetflow.engine.agent import current_agents, current_members
from packetflow.engine.clock import WALL_CLOCK, Clock
from packetflow.engine.runtime.admission import Admission
from packetflow.engine.runtime.announcer import Announcer
from packetflow.engine.runtime.breaker import Breaker
from packetflow.engine.runtime.commit import Committer
from packetflow.engine.runtime.followers import TableFollowers
from packetflow.engine.runtime.lifecycle import Lifecycle
from packetflow.engine.runtime.members import ANNOUNCE_EVERY, Roster
from packetflow.engine.runtime.metrics import WorkerMetrics
from packetflow.engine.runtime.outage import Outage, quiet_aiokafka
from packetflow.engine.runtime.processor import Processor
from packetflow.engine.runtime.services import WorkerService
from packetflow.engine.runtime.state import StateStore
from packetflow.engine.runtime.tracing import Tracing
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.security import Guard, RevocationFollower, Security
from packetflow.engine.topology import Topology, TopologyError, default_broker_url
from packetflow.engine.transport import (
    BrokerError,
    Committed,
    Consumer,
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


class Worker(Lifecycle, RebalanceListener):
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
        services: Sequence[WorkerService] = (),
        announce_every: float = ANNOUNCE_EVERY,
        state_dir: str | Path | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``security`` replaces the topology's own settings for this worker (TestDriver).

        ``tick_interval``: how often (on ``clock``) time-driven agents such as windows get to
        act when no record arrives. ``instance_id`` names this worker among the topology's
        (default ``$PACKETFLOW_INSTANCE_ID``, else random). Given explicitly, it makes the
        worker a static member of the consumer group: restarted with the same id, it takes
        its partitions back at once instead of after a rebalance; under exactly-once it is
        also the transactional id's suffix, so a restarted worker aborts what its crashed
        predecessor left open. ``services`` live in the worker's lifecycle (an HTTP server,
        say): started once it runs, stopped before it lets go of anything.
        ``announce_every``: seconds between the worker's announcements on the topology's
        members topic (also sent when its assignment changes; see runtime.members).
        ``state_dir`` (default ``$PACKETFLOW_STATE_DIR``; none: in memory): keep keyed state
        on disk there (RocksDB), so a partition taken again replays only its changelog's
        tail (runtime.state_disk); for state larger than memory or restores too slow.
        ``tracing``: a span around each record handled and a ``traceparent`` on each record
        produced (runtime.tracing; off by default, at no cost).
        """
        super().__init__()
        self.tracing = tracing
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
        self.services = list(services)
        self.announce_every = announce_every
        self.state_dir = state_dir or os.environ.get("PACKETFLOW_STATE_DIR") or None
        self.advertised: dict[str, Any] = {}  # what services add to the announcements
        self.roster: Roster | None = None
        self._running_services: list[WorkerService] = []
        self.metrics = WorkerMetrics()
        self.outage = Outage(f"broker {self.transport.url}")
        self.breaker = Breaker(topology.crash_loop_limit, max_batch)
        self.committer = Committer(
            topology.group_id, topology.exactly_once, self.breaker, self.metrics
        )
        self.admission = Admission()
        self.guard: Guard | None = None
        self.view: WorkerView | None = None
        self._revocations: RevocationFollower | None = None
        self._tables: TableFollowers | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._processor: Processor | None = None
        self._lock = asyncio.Lock()
        self._assigned: set[TopicPartition] = set()
        self._paused_topics: set[str] = set()
        self._last_tick: float | None = None
        self._stopping = False
        self._retrying = False
        self._failure: BaseException | None = None  # from a rebalance callback, raised by step
        self._restoring: set[TopicPartition] = set()  # assigned, state not yet restored

    # -- lifecycle -----------------------------------------------------------------------

    async def _open(self, resources: contextlib.AsyncExitStack) -> None:
        """Connect, create missing topics, read revocations and followed tables to their
        end, join the consumer group, start the services. Each thing opened is closed again
        if a later one fails."""
        topology, transport = self.topology, self.transport
        sealer = self.security.sealer(in_process=transport.in_process)
        internal = sorted(t.intent_type for t in topology.intent_types.values() if t.internal)
        if internal and sealer is None:
            raise TopologyError(
                f"topology {topology.name!r} has internal intent types ({', '.join(internal)}) "
                "and this worker has no worker secret to seal and verify them: run "
                "'packetflow caps secret' (it writes worker.secret to the keys directory) and "
                "give every worker of the topology the same file"
            )
        await transport.start()
        resources.push_async_callback(transport.stop)
        quiet_aiokafka(self.outage)
        specs = topology.topic_specs()
        await transport.ensure_topics(specs)
        limits = await transport.record_limits([spec.name for spec in specs])
        producer = self._producer = transport.producer(
            transactional_id=f"{topology.group_id}.{self.instance_id}"
            if topology.exactly_once
            else None
        )
        producer.key_groups = topology.key_groups()
        await producer.start()
        resources.push_async_callback(producer.stop)
        guard = self.guard = Guard(topology.hierarchy, self.security, self.clock, sealer)
        revocations = self._revocations = RevocationFollower(
            transport,
            topology.physical(topology.revocations_topic),
            self._apply_revocations,
            guard.refresh_keys,
        )
        resources.push_async_callback(revocations.stop)
        await revocations.start()
        processor = self._processor = Processor(
            topology,
            producer,
            self.clock,
            self.metrics,
            guard,
            caught_up=self._caught_up,
            owned=lambda: self._assigned,
            pause=self._pause_topic,
            resume=self._resume_topic,
            limits=limits,
            state_dir=self.state_dir,
            tracing=self.tracing,
        )
        resources.callback(processor.close_stores)
        for agent in processor.agents.values():
            await agent.start()
            resources.push_async_callback(agent.stop)
        tables = self._tables = TableFollowers(transport, topology, processor.agents)
        resources.push_async_callback(tables.stop)
        await tables.start()
        consumer = self._consumer = transport.consumer(
            topology.group_id,
            [topology.physical(t) for t in topology.source_topics()],
            self,
            isolation_level="read_committed" if topology.exactly_once else "read_uncommitted",
            copartitioned=topology.copartitioned,
            instance_id=self.instance_id if self.static else None,
        )
        await consumer.start()
        resources.push_async_callback(consumer.stop)
        for buffered in processor.buffered.values():
            buffered.start()
            resources.push_async_callback(buffered.stop)
        if not transport.in_process:
            watch = asyncio.create_task(self._watch_outage())
            resources.push_async_callback(_cancel, watch)
        roster = self.roster = Roster(self.clock, self.announce_every, sealer)
        self.view = WorkerView(
            topology,
            self.instance_id,
            processor,
            consumer,
            self.metrics,
            self._assigned,
            clock=self.clock,
            roster=roster,
            advertised=self.advertised,
            guard=guard,
            restoring=self._restoring,
            processed=lambda: self.committer.consumed,
            committed=lambda: self.committer.committed,
            tracing=self.tracing,
        )
        log.info("worker for %s started on %s", topology.name, transport.url)
        self._warn_about_security(guard)
        announcer = Announcer(
            topology.physical(topology.members_topic),
            roster,
            sealer,
            self.advertised,
            self.announce_every,
        )
        # last to start (it announces what the others advertised), first to stop
        resources.push_async_callback(self._stop_services)
        for service in (*self.services, announcer):
            await service.start(self.view, transport)
            self._running_services.append(service)
        resources.callback(log.info, "worker for %s stopped", topology.name)

    async def _stop_services(self) -> None:
        """Stop the services started so far, last first, each once."""
        while self._running_services:
            service = self._running_services.pop()
            try:
                await service.stop()
            except Exception as exc:  # the others still stop
                log.error("stopping service %s: %s", type(service).__name__, exc)

    async def _close(self) -> None:
        """Finish the batch in flight, let the intents in hand finish, commit, and hand the
        partitions over cleanly (the resources close after, in reverse order)."""
        self._stopping = True
        await self._stop_services()
        async with self._lock:
            processor, consumer = self._processor, self._consumer
            if processor is not None and processor.buffered:
                for buffered in processor.buffered.values():
                    await buffered.stop()  # the intent in hand finishes; the rest is re-read
                if consumer is not None:
                    await self.committer.commit(consumer, processor, self._assigned)
            with contextlib.suppress(BrokerError):
                await self.committer.settle()  # the last batch's offsets land before we leave
                if consumer is not None:
                    # a clean hand-over: whoever takes these partitions counts no death here
                    await self.committer.commit_clean(consumer, set(self._assigned))

    async def stop(self) -> None:
        """Finish the batch in flight, commit, leave the group, close connections."""
        self._stopping = True
        await super().stop()

    def request_stop(self) -> None:
        """Ask :meth:`run` to return after the current batch (safe from signal handlers)."""
        self._stopping = True

    def handle_signals(self) -> None:
        """Stop gracefully on SIGINT and SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    def _apply_revocations(self, records: list[Record]) -> None:
        guard = self.guard
        if guard is None:
            return
        self.metrics.revocations += len(records)
        for rev in guard.apply(records):
            security_log.info(
                "revocation applied: %s %s (%s)", rev.kind, rev.subject, rev.reason or "-"
            )

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

    # -- running -------------------------------------------------------------------------

    async def run(self) -> None:
        """Process batches until :meth:`request_stop` (or a signal, after ``handle_signals``).

        A batch the broker fails is retried (see the module docstring); only a fenced
        producer (another worker took this one's transactional id) ends the run.
        """
        delay = RETRY_BACKOFF[0]
        rewind = False  # a batch failed: back to the last commit before any other batch
        while not self._stopping:
            try:
                if rewind:
                    # never a batch on top of a failed one's leftovers (its state, its
                    # offsets, what its agents started): until the rewind holds, no step
                    await self.rewind()
                    rewind = False
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
                rewind = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_BACKOFF[1])
            else:
                delay = RETRY_BACKOFF[0]
                self._retrying = False

    async def rewind(self) -> None:
        """Go back to the last commit: a failed batch's effects and state are forgotten (the
        transaction aborted), state restored from the changelogs, records read again."""
        consumer, processor = self._require()
        async with self._lock:
            if self.topology.exactly_once:
                self.metrics.aborted += 1
                with contextlib.suppress(BrokerError):
                    await processor.producer.abort()
            processor.producer.discard()
            await self.committer.discard()
            parts = set(self._assigned)
            committed = await consumer.committed(parts)
            starts, _ = await self._starts(consumer, parts, committed)
            await self._drop(processor, parts)
            await self._restore(processor, parts)
            consumer.seek(starts)
            self.committer.restart(starts)
        log.info("rewound %s to the last commit", _fmt(parts))

    async def _watch_outage(self) -> None:
        """While an outage is under way, ask the broker every second whether it is back."""
        while True:
            await asyncio.sleep(1.0)
            if self.outage.active:
                with contextlib.suppress(BrokerError):
                    await self.transport.ping()
                    self.outage.ok()

    async def step(self, timeout: float = 0.0) -> int:
        """Fetch and fully process one batch; returns how many records it held."""
        consumer, processor = self._require()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise RuntimeError(f"worker cannot go on: {failure}") from failure
        admission = self.admission
        wanted = self.max_batch
        if admission:
            timeout = min(timeout, HELD_POLL)  # held records go in as soon as there is room
            wanted = max(wanted - admission.count(), 1)  # held + fetched: one batch
        batch = await consumer.getmany(timeout, wanted)
        if self._revocations is not None:
            self._revocations.poll_now()  # memory://: a revocation before these records counts
        current_agents.set(processor.agents)  # for table lookups inside reactors
        if self.roster is not None:
            current_members.set(self.roster.members)  # for least-loaded routers
        async with self._lock:
            if self._tables is not None:
                self._tables.apply()
            batch = {tp: recs for tp, recs in batch.items() if tp in self._assigned and recs}
            was_held = admission.take(batch)
            breaker = self.breaker
            if breaker.poisoned and batch:
                await self._set_aside_poison(processor, batch)
            if breaker.probing:
                for tp in list(breaker.probing):
                    if tp not in batch and await consumer.caught_up(tp):
                        breaker.processed(tp, breaker.window)  # nothing left there to probe
            if processor.buffered or breaker.probing or was_held:
                batch = admission.cut(
                    consumer,
                    batch,
                    was_held,
                    breaker,
                    processor.buffered.values(),
                    self._paused_topics,
                )
            tick = self._tick_due(bool(batch))
            committer = self.committer
            buffers = processor.buffered.values()
            if not batch and not tick and not committer.safe(self._assigned, buffers):
                return 0
            if breaker.probing:
                await committer.settle()  # the mark names the one record about to run
            count = sum(len(r) for r in batch.values())
            try:
                if len(batch) == 1 or not processor.concurrent:
                    for records in batch.values():
                        await processor.process(records)
                elif batch:
                    await asyncio.gather(*(processor.process(r) for r in batch.values()))
                for tp, records in batch.items():
                    committer.processed(tp, records[-1].offset + 1)
                    breaker.processed(tp, len(records))
                if tick:
                    await processor.tick(self._owned_of)
                await committer.commit(consumer, processor, self._assigned)
            except BrokerError:
                raise  # run() rewinds and retries
            except BaseException:
                if self.topology.exactly_once:
                    await committer.abort(processor)
                raise
            if batch:
                self.metrics.consumed += count
                self.metrics.batches += 1
                self.metrics.batch_sizes.observe(count)
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
            self.committer.processed(tp, record.offset + 1)
            rest = records[1:]
            if rest:
                batch[tp] = rest
            else:
                del batch[tp]

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
            held = self.admission.held
            self._consumer.resume(
                tp for tp in self._assigned if tp.topic == topic and tp not in held
            )

    def _require(self) -> tuple[Consumer, Processor]:
        if self._consumer is None or self._processor is None:
            raise RuntimeError("worker not started: use 'async with Worker(...)' or await start()")
        return self._consumer, self._processor

    # -- rebalance -----------------------------------------------------------------------

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        committer = self.committer
        self.metrics.rebalances += 1
        async with self._lock:  # the batch in flight has finished by now
            processor = self._processor
            consumer = self._consumer
            if processor is not None and consumer is not None:
                if processor.buffered:
                    for buffered in processor.buffered.values():
                        await buffered.revoke(partitions)  # re-read by the next owner
                    await committer.commit(consumer, processor, self._assigned)
                with contextlib.suppress(BrokerError):  # the group moved on: nothing to clean
                    await committer.settle()  # its offsets are committed before we let go
                    await committer.commit_clean(consumer, partitions)
            self._assigned -= partitions
            if processor is not None:
                await self._drop(processor, partitions)
            committer.forget(partitions)
            self.breaker.forget(partitions)
        log.info("revoked %s", _fmt(partitions))

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        processor, consumer = self._processor, self._consumer
        self.metrics.rebalances += 1
        self._restoring |= partitions
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
        finally:
            self._restoring -= partitions
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
        self.committer.committed.update(starts)

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
        self.admission.forget(partitions)  # never processed, so never committed: re-read
        for buffered in processor.buffered.values():
            await buffered.revoke(partitions)
            buffered.release(partitions)  # held back that commit; now forgotten
        for store in processor.all_stores.values():
            for tp in partitions:
                if tp.topic == store.source_topic:
                    store.close_partition(tp.partition)
        await processor.agents_revoked(partitions)

    async def _restore(self, processor: Processor, partitions: set[TopicPartition]) -> None:
        """Rebuild the state of ``partitions`` from the changelogs, then tell the agents."""
        for (owner, _), store in processor.all_stores.items():
            mine = _partitions_of(store.source_topic, partitions)
            if not mine:
                continue
            starts = {}
            for p in mine:
                start = store.open_partition(p)
                if start is not None:
                    starts[TopicPartition(store.changelog_topic, p)] = start
            began = time.monotonic()
            restored = await self.transport.read_partitions(
                [TopicPartition(store.changelog_topic, p) for p in sorted(mine)],
                store.restore,
                starts=starts,
                on_reset=functools.partial(_forget_local, store, starts),
            )
            took = time.monotonic() - began
            for p in mine:
                store.restored(p)
                self.metrics.registry.gauge(
                    "packetflow_restore_seconds",
                    "seconds the last restore of a changelog partition took (partitions "
                    "assigned together are restored together, and share it)",
                    "restore_seconds",
                    partition=f"{store.changelog_topic}[{p}]",
                ).set(took)
            self.metrics.restored[owner] += restored
            if restored or starts:
                log.info(
                    "restored %d changelog records of %s[%s] in %.2f s%s",
                    restored,
                    store.changelog_topic,
                    ",".join(map(str, sorted(mine))),
                    took,
                    f" (on disk; {len(starts)} partition(s) from their tail)" if starts else "",
                )
        await processor.agents_assigned(partitions)

    # -- inspection (see WorkerView) -------------------------------------------------------

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def state(self, reactor: str, key: str | bytes | None) -> Any:
        """The current state of ``reactor`` (or agent) for ``key`` here (None if not here)."""
        return self._view().state(reactor, key)

    def inspect(self, agent: str, key: str | bytes | None) -> Any:
        """All ``agent`` holds for ``key`` here (an actor: state, status, asks, reminders)."""
        return self._view().inspect(agent, key)

    def states(self, reactor: str) -> dict[str | None, Any]:
        """Every key's state of ``reactor`` held by this worker."""
        return self._view().states(reactor)

    async def lag(self) -> int:
        return await self._view().lag()

    async def stream_metrics(self) -> dict[str, dict[str, Any]]:
        """Per reactor and agent: see :meth:`WorkerView.stream_metrics`."""
        return await self._view().stream_metrics()

    def _view(self) -> WorkerView:
        if self.view is None:
            raise RuntimeError("worker not started: use 'async with Worker(...)' or await start()")
        return self.view

    def next_timer(self) -> float | None:
        """When (clock seconds) the earliest clock timer of this worker's agents is due."""
        processor = self._processor
        due = None if processor is None else processor.next_timer()
        return None if due is None else due / 1000

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
            not self.admission
            and all(b.idle for b in processor.buffered.values())
            and not self.committer.safe(self._assigned, processor.buffered.values())
        )


def _forget_local(
    store: StateStore, starts: dict[TopicPartition, int], tp: TopicPartition
) -> None:
    """A local store's changelog offset outside its changelog (the topic was deleted and
    made again, or cut) means its values came from elsewhere: it is restored in full."""
    log.warning(
        "%s[%d]: the local state reflects offset %d, outside the changelog; restoring it in "
        "full", tp.topic, tp.partition, starts.pop(tp),
    )
    store.forget_local(tp.partition)


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def _partitions_of(topic: str, partitions: Iterable[TopicPartition]) -> set[int]:
    return {tp.partition for tp in partitions if tp.topic == topic}


def _fmt(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
