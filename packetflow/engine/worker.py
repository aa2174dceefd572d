"""Worker: runs a topology's reactors against a broker, batch by batch, at least once.

Lifecycle (aiokafka style)::

    async with Worker(topology, "kafka://127.0.0.1:9092") as worker:
        await worker.run()          # until worker.request_stop() or a signal

Each batch: fetch up to ``max_batch`` records, process every partition's records in order
(partitions concurrently), queue state changes on the changelogs, wait for the broker to
acknowledge every produced record, then commit the consumed offsets (on ``kafka://`` that
commit travels while the next batch is fetched and processed; the one after waits for it).
On revoke, the batch in flight finishes and its commit lands first; on assign, state is
restored from the changelog before any record of that partition is processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterable
from types import TracebackType
from typing import Any

from packetflow.engine.clock import WALL_CLOCK, Clock
from packetflow.engine.metrics import WorkerMetrics
from packetflow.engine.processor import Processor
from packetflow.engine.security import Guard, Security
from packetflow.engine.topology import Topology, default_broker_url
from packetflow.engine.transport import (
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
    ) -> None:
        """``security`` replaces the topology's own settings for this worker (TestDriver)."""
        if not topology.reactors:
            raise ValueError(f"topology {topology.name!r} has no reactors to run")
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
        self.metrics = WorkerMetrics()
        self.guard: Guard | None = None
        self._follower: Follower | None = None
        self._follow_task: asyncio.Task[None] | None = None
        self._producer: Producer | None = None
        self._consumer: Consumer | None = None
        self._processor: Processor | None = None
        self._lock = asyncio.Lock()
        self._committing: asyncio.Task[None] | None = None
        self._assigned: set[TopicPartition] = set()
        self._stopping = False
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, create missing topics, join the consumer group."""
        await self.transport.start()
        await self.transport.ensure_topics(self.topology.topic_specs())
        self._producer = self.transport.producer()
        await self._producer.start()
        self.guard = Guard(self.topology, self.security, self.clock)
        await self._start_revocations(self.guard)
        self._processor = Processor(
            self.topology, self._producer, self.clock, self.metrics, self.guard
        )
        self._consumer = self.transport.consumer(
            self.topology.group_id,
            [self.topology.physical(t) for t in self.topology.source_topics()],
            self,
        )
        await self._consumer.start()
        self._started = True
        log.info("worker for %s started on %s", self.topology.name, self.transport.url)
        self._warn_about_security(self.guard)

    async def _start_revocations(self, guard: Guard) -> None:
        """Read the revocations topic to its end before any record is processed, then follow."""
        topic = self.topology.physical(self.topology.revocations_topic)
        follower = self.transport.follow(topic, await self.transport.partitions_for(topic))
        await follower.start()
        self._follower = follower
        self._apply_revocations(await follower.catch_up())
        if not follower.immediate:
            self._follow_task = asyncio.create_task(self._follow(follower, guard))

    def _apply_revocations(self, records: list[Record]) -> None:
        guard = self.guard
        if guard is None:
            return
        for record in records:
            rev = guard.apply(record)
            self.metrics.revocations += 1
            if rev is not None:
                security_log.info(
                    "revocation applied: %s %s (%s)", rev.kind, rev.subject, rev.reason or "-"
                )

    async def _follow(self, follower: Follower, guard: Guard) -> None:
        """Background task (kafka://): apply revocations as they arrive; rescan trusted keys."""
        while True:
            try:
                self._apply_revocations(await follower.poll(0.5))
                guard.refresh_keys()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep following: a broker hiccup must not stop this
                log.warning("following revocations: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(1.0)

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
        async with self._lock:
            await self._settle_commit()  # the last batch's offsets land before we leave
        if self._follow_task is not None:
            self._follow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow_task
            self._follow_task = None
        if self._follower is not None:
            await self._follower.stop()
            self._follower = None
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
        """Process batches until :meth:`request_stop` (or a signal, after ``handle_signals``)."""
        while not self._stopping:
            await self.step(self.poll_timeout)

    def handle_signals(self) -> None:
        """Stop gracefully on SIGINT and SIGTERM."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.request_stop)

    # -- the loop ------------------------------------------------------------------------

    async def step(self, timeout: float = 0.0) -> int:
        """Fetch and fully process one batch; returns how many records it held."""
        consumer, processor = self._require()
        batch = await consumer.getmany(timeout, self.max_batch)
        follower = self._follower
        if follower is not None and follower.immediate:
            # memory://: a revocation written before these records applies to them
            self._apply_revocations(follower.poll_nowait())
            processor.guard.refresh_keys()
        if not batch:
            return 0
        async with self._lock:
            batch = {tp: recs for tp, recs in batch.items() if tp in self._assigned and recs}
            if not batch:
                return 0
            count = sum(len(r) for r in batch.values())
            if len(batch) == 1 or not processor.concurrent:
                for records in batch.values():
                    await processor.process(records)
            else:
                await asyncio.gather(*(processor.process(r) for r in batch.values()))
            await self._commit(consumer, processor, batch)
            self.metrics.consumed += count
            self.metrics.batches += 1
            return count

    async def _commit(
        self,
        consumer: Consumer,
        processor: Processor,
        batch: dict[TopicPartition, list[Record]],
    ) -> None:
        await processor.write_changelogs()
        await processor.producer.flush()  # every record this batch produced is acknowledged
        self.metrics.emitted = processor.interpreter.emitted
        await self._settle_commit()  # commits land in order, and their errors surface here
        offsets = {tp: recs[-1].offset + 1 for tp, recs in batch.items()}
        if consumer.commit_in_background:
            # The next batch is fetched and processed while this commit travels: at-least-once
            # holds (its records are acknowledged), and a crash before it lands only repeats it.
            self._committing = asyncio.create_task(self._commit_offsets(consumer, offsets))
        else:
            await self._commit_offsets(consumer, offsets)

    async def _commit_offsets(self, consumer: Consumer, offsets: dict[TopicPartition, int]) -> None:
        await consumer.commit(offsets)
        self.metrics.commits += 1

    async def _settle_commit(self) -> None:
        """Wait for the commit still travelling, if any; raise its error."""
        task, self._committing = self._committing, None
        if task is not None:
            await task

    def _require(self) -> tuple[Consumer, Processor]:
        if self._consumer is None or self._processor is None:
            raise RuntimeError("worker not started: use 'async with Worker(...)' or await start()")
        return self._consumer, self._processor

    # -- rebalance -----------------------------------------------------------------------

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight has finished by now
            await self._settle_commit()  # and its offsets are committed before we let go
            self._assigned -= partitions
            processor = self._processor
            if processor is None:
                return
            for tp in partitions:
                for name, store in processor.stores.items():
                    if self.topology.physical(self.topology.reactors[name].topic) == tp.topic:
                        store.close_partition(tp.partition)
        log.info("revoked %s", _fmt(partitions))

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        processor = self._processor
        if processor is not None:
            for name, store in processor.stores.items():
                topic = self.topology.physical(self.topology.reactors[name].topic)
                mine = [tp.partition for tp in partitions if tp.topic == topic]
                if not mine:
                    continue
                for p in mine:
                    store.open_partition(p)
                restored = await self.transport.read_partitions(
                    [TopicPartition(store.changelog_topic, p) for p in mine], store.restore
                )
                self.metrics.restored[name] += restored
        self._assigned |= partitions
        log.info("assigned %s", _fmt(partitions))

    # -- inspection ----------------------------------------------------------------------

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def state(self, reactor: str, key: str | bytes | None) -> Any:
        """The current state of ``reactor`` for ``key`` on this worker (None if not here)."""
        _, processor = self._require()
        if reactor not in processor.stores:
            raise KeyError(f"{reactor!r} is not a stateful reactor of {self.topology.name!r}")
        raw = key.encode() if isinstance(key, str) else key
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
        if self._lock.locked():
            return False
        batches = self.metrics.batches
        lag = await self.lag()
        return lag == 0 and not self._lock.locked() and self.metrics.batches == batches


def _fmt(partitions: Iterable[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(partitions))
