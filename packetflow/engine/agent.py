"""Agents: what consumes a topic inside the worker loop besides reactors (windows, tables, ...).

The engine runs reactors itself. Substrates (``packetflow.streams``, later actors and
temporal) add agents through this contract, and so share the worker's consumer group,
decoding, capability check, keyed state with changelogs, timers, dead letters, transactions
and commits. An :class:`AgentSpec` is declaration (topology data, no I/O); each worker makes
its own :class:`AgentRuntime` from it with the :class:`AgentServices` of that worker.

The services are typed by protocols this module defines, so an agent sees what it may use
and nothing of the machinery behind it (``engine.runtime`` implements them).

Ordering guarantees, as aiokafka documents its rebalance listener's: :meth:`AgentRuntime.
revoked` is awaited after the batch in flight has finished and its offsets are committed,
and before another worker may take the partitions; :meth:`AgentRuntime.assigned` is awaited
after the partitions' stores are restored and before any of their records is handled.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, Protocol

import orjson

from packetflow.core.context import Context
from packetflow.core.effects import Delivery, Effect
from packetflow.core.intent import Intent
from packetflow.core.reactor import StateSpec
from packetflow.engine.clock import Clock
from packetflow.engine.names import TopicNames
from packetflow.engine.transport import Producer, Record


@dataclass(frozen=True)
class TopicDecl:
    """A topic an agent needs besides its source (logical name; partitions None = default)."""

    name: str
    partitions: int | None = None
    compacted: bool = False
    # managed by the engine (a repartition topic, say): no effect may write to it
    internal: bool = False


@dataclass(frozen=True)
class StoreDecl:
    """A keyed, changelog-backed store an agent keeps (``name`` "" is its main store, whose
    changelog is ``<topology>.<agent>.changelog``; others ``<topology>.<agent>.<name>...``)."""

    name: str
    spec: StateSpec[Any]


# An agent's timers (``AgentSpec.timers``): [due ms, 1 for a clock timer] per name and key.
TIMERS = StoreDecl(
    "timers",
    StateSpec(initial=list, encode=orjson.dumps, decode=orjson.loads, type_name="timers"),
)

# What an agent's failure on one record should lead to (see AgentRuntime.on_error).
Decision = Literal["dead-letter", "retry", "stop"]


@dataclass(frozen=True, kw_only=True)
class AgentSpec(abc.ABC):
    """A declared agent: its name, source topic and intent types, and how to run it."""

    kind: ClassVar[str] = "agent"
    # True: the agent keeps timers (``AgentServices.timers``), in a changelogged store
    timers: ClassVar[bool] = False
    # False: its timers are kept in memory only, for an agent that sets them again from its
    # own state in ``assigned`` (a window's close times follow from its open windows)
    durable_timers: ClassVar[bool] = True
    # False: its state is the engine's own business (what an MCP call returned to whom),
    # never read from outside (the web's GET /state, MCP's state:// resources)
    readable: ClassVar[bool] = True
    # False: its records are keyed by something else than their intent's key field (an
    # actor's id), and it checks what a record's capability covers itself; True: the engine
    # refuses a record whose requirements name its key field but whose key is another
    # (``key-mismatch``), as for reactors
    keyed_by_field: ClassVar[bool] = True
    name: str
    topic: str  # logical source topic
    intent_types: tuple[type[Intent], ...]
    description: str = ""
    # keyed stores backed by changelogs; the first, named "", is ``AgentServices.store``
    stores: tuple[StoreDecl, ...] = ()
    # True: partition p of ``topic`` must land on the worker that owns p of the other topics
    copartitioned: bool = False
    # intent types this agent sends (for descriptions and graphs)
    emits: tuple[type[Intent], ...] = ()
    # takes intent types that require nothing and are not internal, from anyone
    public: bool = False
    # its source topic may be a request's reply_to: replies to what it asked come to it
    # (keyed by the requester it named), as ordinary records of its topic
    takes_replies: bool = False
    # answers to its requests may be of any type the topology knows (``known_types``), not
    # only those it declares: a record of an undeclared type reaches it only as an answer
    # (its context names this topic as reply_to, so a worker sealed it)
    any_answer: bool = False
    # records of its source topic are partitioned by their key's part before this separator
    # (a group: "g1/a" and "g1/b" share a partition), by every producer of the topology
    key_group: str | None = None

    @property
    def state(self) -> StateSpec[Any] | None:
        """The main store's spec (None: the agent keeps no state)."""
        return next((s.spec for s in self.stores if s.name == ""), None)

    def declared_stores(self) -> tuple[StoreDecl, ...]:
        """Every store the agent keeps, its timers' included."""
        return (*self.stores, TIMERS) if self.timers and self.durable_timers else self.stores

    def topics(self) -> list[TopicDecl]:
        """Other topics this agent writes to (they are created with the topology's)."""
        return []

    def followed(self, names: TopicNames) -> list[str]:
        """Topics (logical) every worker reads whole, outside the group, into this agent."""
        return []

    def describe(self) -> dict[str, Any]:
        """Extra facts for ``packetflow topology show``."""
        return {}

    @abc.abstractmethod
    def runtime(self, services: AgentServices) -> AgentRuntime:
        """This agent running inside one worker."""


class AgentRuntime(abc.ABC):
    """One worker's running agent. ``handle`` is called for every authorised intent."""

    # True: the worker calls :meth:`tick` as time passes, even when no record arrives
    ticks: ClassVar[bool] = False

    async def start(self) -> None:  # noqa: B027 - a hook: most agents need no start
        """The worker has started (before any partition is assigned)."""

    async def stop(self) -> None:  # noqa: B027 - a hook
        """The worker is stopping (its last batch is committed)."""

    @abc.abstractmethod
    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        """Take one intent. An exception is decided on by :meth:`on_error`."""

    def on_error(self, record: Record, intent: Intent, error: Exception) -> Decision:
        """What a failure of :meth:`handle` leads to: ``"dead-letter"`` (the default: the
        record is set aside, the agent goes on), ``"retry"`` (handle it again, a few times
        with backoff, then set it aside) or ``"stop"`` (the worker stops; its partitions go
        to another, which restores their state and tries again)."""
        return "dead-letter"

    def next_due(self) -> int | None:
        """When (clock ms) this agent's ``tick`` has something due it keeps in memory (an
        actor's in-memory timers), for virtual time to stop there; None: nothing."""
        return None

    async def tick(self) -> None:  # noqa: B027 - a hook
        """Time has passed (wall clock, or virtual time in tests)."""

    async def assigned(self, partitions: set[int]) -> None:  # noqa: B027 - a hook
        """These source partitions are now this worker's, their stores restored."""

    async def revoked(self, partitions: set[int]) -> None:  # noqa: B027 - a hook
        """These source partitions left this worker (their stores are already dropped)."""

    async def on_timer(self, timer: Timer) -> None:  # noqa: B027 - a hook
        """A clock timer this agent set (``services.timers``) is due."""

    def follow(self, record: Record) -> None:  # noqa: B027 - a hook
        """A record of one of the spec's ``followed()`` topics (every worker sees all)."""

    def state(self, key: bytes | None) -> Any:
        """What this agent holds for ``key`` (for inspection and tests), or None."""
        return None

    def inspect(self, key: bytes | None) -> Any:
        """Everything an operator would want to see of ``key`` here (an actor's state with
        its supervision status, asks and reminders, say); by default its state."""
        return self.state(key)


class Origin(NamedTuple):
    """The run that produced some effects: its name, context and record key."""

    reactor: str
    context: Context
    key: bytes | None


class Timer(NamedTuple):
    """A timer that came due: on which partition, for which key, its name and due time."""

    partition: int
    key: bytes
    name: str
    due: int  # ms since the epoch


# -- the services' protocols -------------------------------------------------------------


class KeyedStore(Protocol):
    """State per partition and record key, written to a compacted changelog per batch."""

    def get(self, partition: int, key: bytes | None) -> Any: ...
    def peek(self, partition: int, key: bytes | None) -> Any | None: ...
    def put(self, partition: int, key: bytes | None, value: Any) -> None: ...
    def encode(self, value: Any, key: bytes | None = None) -> bytes:
        """``value`` as its changelog record now (raises ``ValueError`` if it cannot be
        one: not encodable, too large), so a turn fails before its effects are sent."""
        ...

    def put_encoded(
        self, partition: int, key: bytes | None, value: Any, encoded: bytes
    ) -> None: ...
    def delete(self, partition: int, key: bytes | None) -> None: ...
    def release(self, partition: int, key: bytes | None) -> None:
        """``key``'s value may leave memory (a later read brings it back); what is not yet
        on disk stays. A store that lives in memory keeps it (nowhere else to read it)."""
        ...

    def items(self, partition: int) -> Iterator[tuple[bytes, Any]]: ...
    def find(self, key: bytes | None) -> Any | None: ...


class Timers(Protocol):
    """Timers per partition and key that survive restarts and rebalances (a changelog).

    ``clock=True`` timers are fired by the worker as its clock passes their due time
    (:meth:`AgentRuntime.on_timer`, inside the batch's transaction); others (event time: a
    window's close) are taken by the agent itself with :meth:`pop_due` as its time moves.
    """

    def set(
        self, partition: int, key: bytes, name: str, due: int, *, clock: bool = False
    ) -> None: ...
    def cancel(self, partition: int, key: bytes, name: str) -> None: ...
    def pop_due(self, partition: int, upto: int) -> list[Timer]: ...
    def next_due(self, partition: int, *, clock: bool = True) -> int | None: ...
    def items(self, partition: int) -> Iterable[Timer]: ...
    def live(self) -> int:
        """Live timers, across the partitions held."""
        ...


class CounterLike(Protocol):
    def inc(self, amount: float = 1.0) -> None: ...


class GaugeLike(Protocol):
    def set(self, value: float) -> None: ...


class HistogramLike(Protocol):
    def observe(self, value: float, weight: int = 1) -> None: ...


class Metrics(Protocol):
    """The worker's metrics registry: a substrate registers its own metrics here (one
    naming scheme, exported together). ``short`` names the metric in
    ``worker.metrics.snapshot()``, keyed by its one label's value."""

    def counter(self, name: str, help: str, short: str = "", **labels: str) -> CounterLike: ...
    def gauge(self, name: str, help: str, short: str = "", **labels: str) -> GaugeLike: ...
    def histogram(
        self, name: str, help: str, short: str = "", **labels: str
    ) -> HistogramLike: ...


class EffectRunner(Protocol):
    """Carries out what an agent's function returned, as for a reactor: all of it, or
    (when something cannot be done) none of its sends."""

    async def run_effects(self, effects: Iterable[Effect], origin: Origin) -> None: ...

    async def run(self, effect: Effect, origin: Origin) -> Any:
        """Carry out one effect completely (nested ones too) and return its result."""
        ...

    async def emit(
        self,
        intent: Intent,
        origin: Origin,
        *,
        topic: str | None = None,
        key: str | None = None,
        sealed: bool = True,
    ) -> Delivery:
        """Send one intent on the reactor's behalf, checked as an emit and sealed as the
        engine's own (every intent the engine emits for an effect is internal by default)."""
        ...


class EffectHandler(Protocol):
    """Carries out an effect type the engine does not know (``topology.register_effect``):
    ``runner`` runs the effects it is made of, if any. Its return value is the effect's
    result (what a ``pipeline`` step receives). It raises to fail the record."""

    async def __call__(self, effect: Any, origin: Origin, runner: EffectRunner) -> Any: ...


KEPT_BAGGAGE = "pf.authority"  # context baggage: the token behind vouched capabilities


@dataclass(frozen=True)
class KeptAuthority:
    """What an agent keeps of the authority a message carried, to act on it later (a
    schedule firing, say): who, what was granted, and, for a token, its id, its chain (id,
    holder, issued at) and its validity window; never the token itself."""

    principal: str | None
    grants: tuple[str, ...]
    token_id: str | None = None
    chain: tuple[tuple[str, str, int], ...] = ()
    not_before: float = 0.0
    expires: float | None = None  # None: plain capabilities, which do not expire

    def as_json(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "grants": list(self.grants),
            "token_id": self.token_id,
            "chain": [list(link) for link in self.chain],
            "not_before": self.not_before,
            "expires": self.expires,
        }

    def baggage(self) -> dict[str, str]:
        """What a worker puts in the context of what it sends with these grants (sealed):
        the token's id, chain and validity, so authority kept again from that context (a
        schedule made while handling a firing) keeps them too."""
        if self.token_id is None:
            return {}
        kept = self.as_json()
        del kept["grants"], kept["principal"]
        return {KEPT_BAGGAGE: orjson.dumps(kept).decode()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeptAuthority:
        return cls(
            principal=data.get("principal"),
            grants=tuple(data.get("grants", ())),
            token_id=data.get("token_id"),
            chain=tuple((str(t), str(h), int(i)) for t, h, i in data.get("chain", ())),
            not_before=float(data.get("not_before", 0.0)),
            expires=None if data.get("expires") is None else float(data["expires"]),
        )


class Authority(Protocol):
    """The worker's guard, as agents use it for authority they keep."""

    def keep(self, context: Context) -> KeptAuthority:
        """What to keep of the (already authorised) authority ``context`` carries."""
        ...

    def lapsed(self, kept: KeptAuthority) -> tuple[str, str] | None:
        """Why ``kept`` no longer holds now (reason, message: ``expired``, ``revoked``,
        ``not-yet-valid``), or None."""
        ...


class Seal(Protocol):
    """Seals an internal intent for the topic and key it is sent to (see security.seal)."""

    def __call__(
        self,
        topic: str,
        key: bytes | None,
        type_name: bytes,
        value: bytes,
        context_raw: bytes | None,
        token_raw: bytes | None,
    ) -> bytes: ...


@dataclass
class AgentServices:
    """What a worker lends an agent runtime."""

    names: TopicNames
    producer: Producer
    effects: EffectRunner
    clock: Clock
    metrics: Metrics
    source_topic: str  # physical
    stores: Mapping[str, KeyedStore]
    timers: Timers
    # set a record aside: (record, reason, message) on the dead-letter topic, or
    # (physical topic, record, extra headers) elsewhere (late, drops)
    dead_letter: Callable[[Record, str, str], Awaitable[None]]
    set_aside: Callable[[str, Record, list[tuple[str, str]]], Awaitable[None]]
    caught_up: Callable[[int], Awaitable[bool]]
    owned: Callable[[], set[int]]
    partitions: Callable[[str], int]  # partition count of a (logical) topic
    # count a failure that has no record to set aside (a window's result at its close)
    failed: Callable[[], None]
    seal: Seal | None = None  # None: this worker holds no worker secret
    authority: Authority | None = None  # the worker's guard
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> KeyedStore:
        """The main store (``StoreDecl("")``)."""
        return self.stores[""]


# The agents of the worker whose batch is being processed: how code running inside a
# reactor (a table lookup, say) finds this worker's state without being handed it.
current_agents: ContextVar[dict[str, AgentRuntime]] = ContextVar("packetflow_agents")


class WorkerLoad(Protocol):
    """What a worker last announced of itself on the members topic (runtime.members.Member)."""

    @property
    def partitions(self) -> Mapping[str, Sequence[int]]: ...  # logical source topic -> owned
    @property
    def lag(self) -> int: ...
    @property
    def buffered(self) -> int: ...


# The topology's workers as announced, for code running inside a reactor or actor (a
# least-loaded router): set by the worker whose batch is being processed.
current_members: ContextVar[Callable[[], Sequence[WorkerLoad]]] = ContextVar(
    "packetflow_members"
)
