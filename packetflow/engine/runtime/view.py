"""A running worker, read-only: what it owns, holds and does.

Services that live in a worker (the HTTP server, the MCP server, a metrics exporter) get a
:class:`WorkerView`: state by key, assignment, metrics, the topology's description; never
the worker's moving parts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from packetflow.core.context import Context
from packetflow.engine.clock import WALL_CLOCK, Clock
from packetflow.engine.runtime.gate import authorize_way_in
from packetflow.engine.runtime.members import Member, Roster
from packetflow.engine.runtime.metrics import WorkerMetrics
from packetflow.engine.runtime.processor import Processor
from packetflow.engine.runtime.tracing import Tracing
from packetflow.engine.security.guard import Denial, Guard
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Consumer, TopicPartition


class WorkerView:
    """What one worker holds for its topology (its partitions' state, its counters)."""

    def __init__(
        self,
        topology: Topology,
        instance_id: str,
        processor: Processor,
        consumer: Consumer,
        metrics: WorkerMetrics,
        assigned: set[TopicPartition],
        *,
        clock: Clock = WALL_CLOCK,
        roster: Roster | None = None,
        advertised: dict[str, Any] | None = None,
        guard: Guard | None = None,
        restoring: set[TopicPartition] | None = None,
        processed: Callable[[], dict[TopicPartition, int]] | None = None,
        committed: Callable[[], dict[TopicPartition, int]] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.topology = topology
        self.instance_id = instance_id
        self.clock = clock
        self._processor = processor
        self._consumer = consumer
        self.metrics = metrics
        self._assigned = assigned  # the worker's own set: kept current by it
        self._roster = roster
        self._advertised = advertised if advertised is not None else {}
        self._guard = guard
        self._restoring = restoring if restoring is not None else set()
        self._processed = processed
        self._committed = committed
        self.tracing = tracing  # the worker's (None: off): ways in open their spans with it

    @property
    def restoring(self) -> set[TopicPartition]:
        """Partitions assigned to this worker whose state is still being restored."""
        return set(self._restoring)

    def processed(self, topic: str, partition: int) -> int | None:
        """The offset after the last record of ``partition`` of ``topic`` (logical) this
        worker processed: what its state there reflects (None: nothing processed here)."""
        if self._processed is None:
            return None
        return self._processed().get(TopicPartition(self.topology.physical(topic), partition))

    def authorize(
        self, required: tuple[tuple[str, str], ...], context: Context, what: str
    ) -> Denial | None:
        """Check a way in (an HTTP request, an MCP call) with this worker's guard, as it
        checks records: ``context``'s token (or plain capabilities where the topology takes
        them) against ``required``, with its keys and revocations, on its clock. None:
        allowed (the context then names the token's holder and holds its grants). The
        interface records a refusal in the audit (``engine.security.audit``)."""
        guard = self._guard
        if guard is None:
            raise RuntimeError("this worker view has no guard")
        return authorize_way_in(guard, required, context, what)

    def members(self) -> list[Member]:
        """The topology's workers as they last announced themselves (runtime.members),
        this one included once it has announced."""
        return [] if self._roster is None else self._roster.members()

    def advertise(self, **fields: Any) -> None:
        """Add to what this worker announces about itself (``http="host:port"``, say): the
        one thing a service may change through the view. Sent with the next announcement."""
        self._advertised.update(fields)

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def owns(self, topic: str, partition: int) -> bool:
        """Whether this worker owns ``partition`` of ``topic`` (logical name) now."""
        return TopicPartition(self.topology.physical(topic), partition) in self._assigned

    def state(self, reactor: str, key: str | bytes | None) -> Any:
        """The current state of ``reactor`` (or agent: open windows, a table row) for ``key``
        on this worker (None if not here)."""
        processor = self._processor
        raw = key.encode() if isinstance(key, str) else key
        if reactor in processor.agents:
            return processor.agents[reactor].state(raw)
        if reactor not in processor.stores:
            raise KeyError(f"{reactor!r} is not a stateful reactor of {self.topology.name!r}")
        return processor.stores[reactor].find(raw)

    def inspect(self, agent: str, key: str | bytes | None) -> Any:
        """What ``agent`` holds for ``key`` on this worker, whole (``AgentRuntime.inspect``)."""
        runtime = self._processor.agents.get(agent)
        if runtime is None:
            raise KeyError(f"{agent!r} is not an agent of {self.topology.name!r}")
        return runtime.inspect(key.encode() if isinstance(key, str) else key)

    def states(self, reactor: str) -> dict[str | None, Any]:
        """Every key's state of ``reactor`` held by this worker."""
        store = self._processor.stores[reactor]
        return {
            (k.decode() if k is not None else None): v
            for p in store.partitions
            for k, v in store.items(p)
        }

    def committed(self) -> dict[TopicPartition, int]:
        """The offsets this worker committed last, by partition (physical names)."""
        return dict(self._committed()) if self._committed is not None else {}

    def producer_queue(self) -> int:
        """Records this worker sent that the broker has not acknowledged yet."""
        return self._processor.producer.queued()

    async def partition_lag(self) -> dict[TopicPartition, int]:
        """Records not yet consumed, by partition of this worker's (physical names)."""
        return await self._consumer.lag()

    async def lag(self) -> int:
        """Records not yet consumed in this worker's partitions."""
        return sum((await self._consumer.lag()).values())

    async def stream_metrics(self) -> dict[str, dict[str, Any]]:
        """Per reactor and agent: processed, errors, dropped, buffer depth, consumer lag of
        its source partitions here, and processing latency (ms from fetch to done)."""
        lag = await self._consumer.lag()
        m = self.metrics
        out: dict[str, dict[str, Any]] = {}
        for spec in self.topology.consumers():
            name = spec.name
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
