"""Live feeds: ``GET /live/{topic}`` (Server-Sent Events) and ``WS /live/{topic}``.

One follower per topic per worker, started with its first subscriber, fans each record out
to every subscriber whose token may read it (``read:`` on the intent's resource, or
``observe:topology/<name>`` for an intent that names none). Each event's id is
``topic/partition/offset``; the hub keeps the last ``HISTORY`` events, so a client that
reconnects with ``Last-Event-ID`` gets what it missed, nothing twice. A subscriber whose
queue is full (it reads slower than the topic moves) is dropped with a clear reason
instead of holding memory without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field

import orjson

from packetflow.core.capability import CompiledGrants
from packetflow.engine.client import decode_loosely
from packetflow.engine.runtime.metrics import MetricsRegistry
from packetflow.engine.topology import Topology
from packetflow.engine.transport import END, Follower, Record, Transport

log = logging.getLogger("packetflow.web")

HISTORY = 10_000  # events each topic's hub keeps for resuming clients
QUEUE = 1_000  # events a subscriber may fall behind before it is dropped
SLOW = "slow-subscriber"


@dataclass(frozen=True, slots=True)
class Event:
    id: str  # topic/partition/offset
    type: str
    resource: tuple[str, str]  # what reading it needs
    data: bytes  # the event's JSON


@dataclass(eq=False)
class Subscriber:
    """One client of a hub: its grants, its queue, why it was dropped (None: it was not)."""

    grants: CompiledGrants
    queue: asyncio.Queue[Event | None] = field(default_factory=lambda: asyncio.Queue(QUEUE))
    dropped: str | None = None

    def may(self, event: Event) -> bool:
        return not self.grants.missing((event.resource,), time.time())

    def offer(self, event: Event) -> bool:
        """Queue ``event`` if the grants allow it; False when the queue is full (drop it)."""
        if not self.may(event):
            return True
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True


class TopicHub:
    """The follower of one topic and its subscribers."""

    def __init__(
        self,
        transport: Transport,
        topology: Topology,
        topic: str,
        registry: MetricsRegistry | None = None,
    ) -> None:
        self.transport = transport
        self.topology = topology
        self.topic = topic
        registry = registry or MetricsRegistry()
        self._gauge = registry.gauge(
            "packetflow_live_subscribers", "subscribers of a live feed now, by topic",
            "live_subscribers", topic=topic,
        )  # fmt: skip
        self._dropped = registry.counter(
            "packetflow_live_dropped_total", "live subscribers dropped, by topic and reason",
            "live_dropped", topic=topic,
        )  # fmt: skip
        self.history: deque[Event] = deque(maxlen=HISTORY)
        self.subscribers: set[Subscriber] = set()
        self._follower: Follower | None = None
        self._task: asyncio.Task[None] | None = None
        self._types = topology.known_types

    async def start(self) -> None:
        physical = self.topology.physical(self.topic)
        follower = self._follower = self.transport.follow(
            physical, await self.transport.partitions_for(physical), start=END
        )
        await follower.start()
        await follower.catch_up()
        self._task = asyncio.create_task(self._run(), name=f"live {self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._follower is not None:
            await self._follower.stop()
        for sub in list(self.subscribers):
            self.drop(sub, "shutting-down")

    def subscribe(self, grants: CompiledGrants, last_event_id: str | None) -> Subscriber:
        """A new subscriber; with ``last_event_id``, first what came after that event."""
        sub = Subscriber(grants)
        if last_event_id:
            ids = [e.id for e in self.history]
            if last_event_id in ids:
                for event in list(self.history)[ids.index(last_event_id) + 1 :]:
                    if not sub.offer(event):
                        self.drop(sub, SLOW)
                        return sub
        self.subscribers.add(sub)
        self._gauge.set(len(self.subscribers))
        return sub

    def leave(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        self._gauge.set(len(self.subscribers))

    def drop(self, sub: Subscriber, reason: str) -> None:
        sub.dropped = reason
        self.subscribers.discard(sub)
        self._gauge.set(len(self.subscribers))
        if reason == SLOW:
            self._dropped.inc()
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:  # what it had not read goes: it is told why instead
                sub.queue.get_nowait()
        sub.queue.put_nowait(None)
        log.info("live %s: a subscriber was dropped (%s)", self.topic, reason)

    async def _run(self) -> None:
        follower = self._follower
        assert follower is not None
        while True:
            try:
                records = await follower.poll(0.5)
            except Exception as exc:  # the broker: try again, the subscribers wait
                log.warning("live %s: %s", self.topic, exc)
                await asyncio.sleep(1.0)
                continue
            for record in sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset)):
                self.publish(self.event(record))

    def event(self, record: Record) -> Event:
        received = decode_loosely(record, self._types)
        intent, context = received.intent, received.context
        type_name = type(intent).intent_type if intent is not None else "?"
        resources = [r for _, r in intent.requirements()] if intent is not None else []
        resource = (
            ("read", resources[0]) if resources else ("observe", f"topology/{self.topology.name}")
        )
        event_id = f"{self.topic}/{record.partition}/{record.offset}"
        data = orjson.dumps({
            "id": event_id, "topic": self.topic, "partition": record.partition,
            "offset": record.offset, "timestamp": record.timestamp,
            "key": record.key.decode(errors="replace") if record.key is not None else None,
            "type": type_name,
            "data": intent.model_dump(mode="json") if intent is not None else None,
            "principal": context.principal if context is not None else None,
            "intent_id": context.intent_id if context is not None else None,
        })  # fmt: skip
        # (never the token: only who sent it)
        return Event(event_id, type_name, resource, data)

    def publish(self, event: Event) -> None:
        self.history.append(event)
        for sub in list(self.subscribers):
            if not sub.offer(event):
                self.drop(sub, SLOW)


class Hubs:
    """A worker's hubs, one per topic, started with their first subscriber."""

    def __init__(
        self, transport: Transport, topology: Topology, registry: MetricsRegistry | None = None
    ) -> None:
        self.transport = transport
        self.topology = topology
        self.registry = registry
        self._hubs: dict[str, TopicHub] = {}
        self._lock = asyncio.Lock()

    async def hub(self, topic: str) -> TopicHub:
        async with self._lock:
            hub = self._hubs.get(topic)
            if hub is None:
                hub = TopicHub(self.transport, self.topology, topic, self.registry)
                await hub.start()
                self._hubs[topic] = hub
            return hub

    @property
    def subscribers(self) -> int:
        return sum(len(h.subscribers) for h in self._hubs.values())

    async def stop(self) -> None:
        for hub in self._hubs.values():
            await hub.stop()
        self._hubs.clear()
