"""Which fetched records may run now, and which are held back (their partitions paused).

Two reasons to hold records back: a blocking backpressure buffer without room (the batch
loop never waits for a slow reactor: other topics, commits, a stop or a rebalance would wait
with it), and the crash-loop breaker probing a partition one record at a time, alone in the
worker. Held records go first next time; held plus fetched records stay within a batch.
"""

from __future__ import annotations

from collections.abc import Iterable

from packetflow.engine.runtime.breaker import Breaker
from packetflow.engine.runtime.buffer import BufferedReactor
from packetflow.engine.transport import Consumer, Record, TopicPartition

Batch = dict[TopicPartition, list[Record]]


class Admission:
    """The records held back, per partition."""

    def __init__(self) -> None:
        self.held: Batch = {}

    def __bool__(self) -> bool:
        return bool(self.held)

    def count(self) -> int:
        return sum(map(len, self.held.values()))

    def take(self, batch: Batch) -> Batch:
        """``batch`` with what was held back in front of it; returns what was held."""
        was_held, self.held = self.held, {}
        for tp, records in was_held.items():
            fetched = batch.get(tp)
            batch[tp] = records + fetched if fetched else records
        return was_held

    def cut(
        self,
        consumer: Consumer,
        batch: Batch,
        was_held: Batch,
        breaker: Breaker,
        buffers: Iterable[BufferedReactor],
        paused_topics: set[str],
    ) -> Batch:
        """Cut each partition's records to what may run now; hold back (and pause) the rest,
        resume the partitions whose held records went in."""
        held: Batch = {}
        probe = breaker.next_probe(tp for tp, records in batch.items() if records)
        if probe is not None:
            # one record in the whole worker, committed on its own: a death now is its doing
            for tp, records in batch.items():
                keep = 1 if tp == probe else 0
                if len(records) > keep:
                    held[tp] = records[keep:]
                    batch[tp] = records[:keep]
        rooms: dict[str, int] = {}
        for buffered in buffers:
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
        self.held = held
        if held:
            consumer.pause(held)
        drained = [tp for tp in was_held if tp not in held and tp.topic not in paused_topics]
        if drained:
            consumer.resume(drained)
        return {tp: records for tp, records in batch.items() if records}

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Drop what is held of ``partitions`` (never processed, so never committed: re-read)."""
        for tp in partitions:
            self.held.pop(tp, None)
