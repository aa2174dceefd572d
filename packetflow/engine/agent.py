"""Agents: what consumes a topic inside the worker loop besides reactors (windows, tables, ...).

The engine runs reactors itself. Substrates (``packetflow.streams``, later actors and
temporal) add agents through this contract, and so share the worker's consumer group,
decoding, capability check, keyed state with changelogs, dead letters, transactions and
commits. An :class:`AgentSpec` is declaration (topology data, no I/O); each worker makes
its own :class:`AgentRuntime` from it with the :class:`AgentServices` of that worker.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from packetflow.core.intent import Intent
from packetflow.core.reactor import StateSpec
from packetflow.engine.clock import Clock
from packetflow.engine.interpreter import Interpreter
from packetflow.engine.metrics import WorkerMetrics
from packetflow.engine.security.seal import Sealer
from packetflow.engine.state import StateStore
from packetflow.engine.transport import Producer, Record

if TYPE_CHECKING:
    from packetflow.core.context import Context
    from packetflow.engine.topology import Topology


@dataclass(frozen=True)
class TopicDecl:
    """A topic an agent needs besides its source (logical name; partitions None = default)."""

    name: str
    partitions: int | None = None
    compacted: bool = False
    # managed by the engine (a repartition topic, say): no effect may write to it
    internal: bool = False


class AgentSpec(abc.ABC):
    """A declared agent: its name, source topic and intent types, and how to run it."""

    kind: ClassVar[str] = "agent"
    name: str
    topic: str  # logical source topic
    intent_types: tuple[type[Intent], ...]
    description: str = ""
    # keyed state in a store backed by the changelog <topology>.<name>.changelog
    state: StateSpec[Any] | None = None
    # True: partition p of ``topic`` must land on the worker that owns p of the other topics
    copartitioned: bool = False
    # intent types this agent sends (for descriptions and graphs)
    emits: tuple[type[Intent], ...] = ()
    # takes intent types that require nothing and are not internal, from anyone
    public: bool = False

    def topics(self) -> list[TopicDecl]:
        """Other topics this agent writes to (they are created with the topology's)."""
        return []

    def followed(self, topology: Topology) -> list[str]:
        """Topics (logical) every worker reads whole, outside the group, into this agent."""
        return []

    def describe(self) -> dict[str, Any]:
        """Extra facts for ``packetflow topology show``."""
        return {}

    @abc.abstractmethod
    def runtime(self, services: AgentServices) -> AgentRuntime:
        """This agent running inside one worker."""


class AgentRuntime:
    """One worker's running agent. ``handle`` is called for every authorised intent."""

    # True: the worker calls :meth:`tick` as time passes, even when no record arrives
    ticks: ClassVar[bool] = False

    @abc.abstractmethod
    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        """Take one intent. An exception dead-letters the record (the agent keeps its state)."""

    async def tick(self) -> None:
        """Time has passed (wall clock, or virtual time in tests)."""

    def assigned(self, partitions: set[int]) -> None:
        """These source partitions are now this worker's, their state restored."""

    def revoked(self, partitions: set[int]) -> None:
        """These source partitions left this worker (their state is already dropped)."""

    def follow(self, record: Record) -> None:
        """A record of one of the spec's ``followed()`` topics (every worker sees all)."""

    def state(self, key: bytes | None) -> Any:
        """What this agent holds for ``key`` (for inspection and tests), or None."""
        return None


@dataclass
class AgentServices:
    """What a worker lends an agent runtime."""

    topology: Topology
    producer: Producer
    interpreter: Interpreter
    clock: Clock
    metrics: WorkerMetrics
    store: StateStore | None
    source_topic: str  # physical
    divert: Callable[[str, Record, list[tuple[str, str]]], Awaitable[None]]
    caught_up: Callable[[int], Awaitable[bool]]
    owned: Callable[[], set[int]]
    sealer: Sealer | None = None  # seals internal intents an agent forwards


# The agents of the worker whose batch is being processed: how code running inside a
# reactor (a table lookup, say) finds this worker's state without being handed it.
current_agents: ContextVar[dict[str, AgentRuntime]] = ContextVar("packetflow_agents")
