"""When offsets are committed: only after the batch's effects are acknowledged, or inside its
transaction.

At-least-once: state changes go to the changelogs, every record produced is acknowledged
(``flush``), and only then are the consumed offsets committed; on ``kafka://`` that commit
travels while the next batch is fetched and processed (a crash before it lands only repeats
the batch), and the one after waits for it. Exactly-once: the offsets are committed inside
the batch's transaction. Offsets never pass an intent still waiting in a backpressure buffer.
Every commit carries the crash-loop breaker's "in flight" mark
(:mod:`packetflow.engine.runtime.breaker`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable

from packetflow.engine.runtime.breaker import Breaker
from packetflow.engine.runtime.buffer import BufferedReactor
from packetflow.engine.runtime.metrics import WorkerMetrics
from packetflow.engine.runtime.processor import Processor
from packetflow.engine.transport import Consumer, TopicPartition

log = logging.getLogger("packetflow.worker")


class Committer:
    """What a worker has processed and committed, per partition, and how it commits."""

    def __init__(
        self, group: str, exactly_once: bool, breaker: Breaker, metrics: WorkerMetrics
    ) -> None:
        self.group = group
        self.exactly_once = exactly_once
        self.breaker = breaker
        self.metrics = metrics
        self.consumed: dict[TopicPartition, int] = {}  # next offset after what was processed
        self.committed: dict[TopicPartition, int] = {}
        self._travelling: asyncio.Task[None] | None = None

    def processed(self, tp: TopicPartition, next_offset: int) -> None:
        self.consumed[tp] = next_offset

    def safe(
        self, assigned: set[TopicPartition], buffered: Iterable[BufferedReactor]
    ) -> dict[TopicPartition, int]:
        """Offsets to commit: what was processed, held back before what is still buffered,
        where that moved past the last commit (empty: nothing new is safe to commit)."""
        out = {}
        buffers = list(buffered)
        for tp, consumed in self.consumed.items():
            if tp not in assigned:
                continue
            safe = consumed
            for b in buffers:
                if b.source_topic == tp.topic:
                    safe = b.safe_offset(tp, safe)
            if safe > self.committed.get(tp, -1):
                out[tp] = safe
        return out

    async def commit(
        self, consumer: Consumer, processor: Processor, assigned: set[TopicPartition]
    ) -> None:
        """Make the batch's effects durable, then commit what is safe (or all in one txn)."""
        offsets = self.safe(assigned, processor.buffered.values())  # before their flush
        await processor.write_changelogs()
        producer = processor.producer
        marks = self.breaker.marks(offsets)
        if self.exactly_once:
            if offsets:
                await producer.send_offsets(offsets, self.group, marks)
            await producer.commit()  # flushes; a no-op when nothing was sent
            await processor.persist_state()  # only committed state reaches the disk
            self.committed.update(offsets)
            self.metrics.commits += 1 if offsets else 0
            self.metrics.emitted = processor.interpreter.emitted
            return
        await producer.flush()  # every record sent so far is acknowledged
        await processor.persist_state()
        self.metrics.emitted = processor.interpreter.emitted
        await self.settle()  # commits land in order, and their errors surface here
        if not offsets:
            return
        self.committed.update(offsets)
        if consumer.commit_in_background:
            # The next batch is fetched and processed while this commit travels: at-least-once
            # holds (its records are acknowledged), and a crash before it lands only repeats it.
            self._travelling = asyncio.create_task(self._commit(consumer, offsets, marks))
        else:
            await self._commit(consumer, offsets, marks)

    async def _commit(
        self,
        consumer: Consumer,
        offsets: dict[TopicPartition, int],
        marks: dict[TopicPartition, str],
    ) -> None:
        await consumer.commit(offsets, marks)
        self.metrics.commits += 1

    async def settle(self) -> None:
        """Wait for the commit still travelling, if any; raise its error."""
        task, self._travelling = self._travelling, None
        if task is not None:
            await task

    async def commit_clean(self, consumer: Consumer, partitions: set[TopicPartition]) -> None:
        """Commit again where ``partitions`` stand, without the in-flight mark: they are let
        go cleanly (what is processed but not yet committed stays for the next owner)."""
        offsets = {tp: self.committed[tp] for tp in partitions if tp in self.committed}
        if offsets:
            await consumer.commit(offsets)

    async def abort(self, processor: Processor) -> None:
        """Abort the batch's transaction (exactly-once) after a failure that stops the worker."""
        self.metrics.aborted += 1
        with contextlib.suppress(Exception):
            await processor.producer.abort()
        log.error(
            "exactly-once transaction aborted: this worker's state may be ahead of the "
            "committed changelog, so it stops; a restarted worker resumes from the last commit"
        )

    async def discard(self) -> None:
        """Forget a commit still travelling (its batch is being rewound)."""
        task, self._travelling = self._travelling, None
        if task is not None:
            with contextlib.suppress(Exception):
                await task

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.consumed.pop(tp, None)
            self.committed.pop(tp, None)

    def restart(self, starts: dict[TopicPartition, int]) -> None:
        """After a rewind: nothing processed since ``starts``, which is what is committed."""
        self.consumed = {}
        self.committed = dict(starts)
