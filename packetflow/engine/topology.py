"""Topology: the reactors, topics, intent types and capabilities of one application, as data.

A topology is declared once in a module and can be described (``packetflow topology
show``), unit-tested with :class:`~packetflow.TestDriver`, or run by workers against any
broker. Topic and group names get ``$PACKETFLOW_NAMESPACE.`` in front when that is set, so
several copies can share one cluster.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from packetflow.core.backpressure import Backpressure
from packetflow.core.capability import CapabilityHierarchy
from packetflow.core.effects import BUILTIN_EFFECTS, Effect
from packetflow.core.intent import Intent, intent_types_of
from packetflow.core.reactor import ReactorSpec, StateSpec
from packetflow.engine.agent import AgentSpec, EffectHandler
from packetflow.engine.codec import DEFAULT_MAX_RECORD_BYTES
from packetflow.engine.names import TopicNames
from packetflow.engine.repartition import KeyBy, Repartition
from packetflow.engine.security import Security
from packetflow.engine.transport import BROKER_MAX_MESSAGE_BYTES, TopicSpec

F = TypeVar("F", bound=Callable[..., Any])
_NAME_RE = re.compile(r"^[A-Za-z0-9._\-]+$")
GUARANTEES = ("at_least_once", "exactly_once")
# What the engine may add to a set-aside copy: reason, error, source, reactor, missing, ...
SET_ASIDE_HEADROOM = 64 * 1024


class TopologyError(ValueError):
    """A topology that cannot run as declared."""


def _check_name(what: str, name: str) -> None:
    """Topology, topic and reactor names become topic names: letters, digits, ``. _ -``."""
    if not _NAME_RE.match(name):
        raise TopologyError(f"{what} name {name!r} may only hold letters, digits, . _ -")


@dataclass(frozen=True)
class StoreInfo:
    """A changelog-backed store: whose, which, how its values are kept, where its changelog is."""

    owner: str  # reactor or agent
    name: str  # "" for the owner's main store
    spec: StateSpec[Any]
    topic: str  # the owner's source topic (logical): the store's partitions are its
    changelog: str  # logical


@dataclass
class TopicInfo:
    name: str
    partitions: int
    reactors: list[str] = field(default_factory=list)
    intent_types: list[str] = field(default_factory=list)


class Topology:
    """Reactors, the topics they consume and emit to, and the capability hierarchy."""

    def __init__(
        self,
        name: str,
        *,
        capabilities: CapabilityHierarchy | Mapping[str, Iterable[str]] | None = None,
        partitions: int = 4,
        namespace: str | None = None,
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        broker: str | None = None,
        security: Security | None = None,
        allow_unsigned: bool | None = None,
        processing_guarantee: str = "at_least_once",
        reply_topics: Iterable[str] = (),
        reactor_timeout: float = 60.0,
        crash_loop_limit: int = 3,
    ) -> None:
        """``security`` says which keys sign tokens and what is audited (default: tokens only,
        signed by a key in the keys directory); ``allow_unsigned=True`` is the shorthand for
        also accepting plain capabilities, which anyone who can produce to a topic can claim.
        ``processing_guarantee="exactly_once"`` runs every batch in a Kafka transaction.
        ``reply_topics``: topics besides ``<name>.replies`` a request's ``reply_to`` may name.
        ``reactor_timeout``: seconds an async reactor may take for one intent before the
        intent is set aside (``reactor-timeout``). ``crash_loop_limit``: after this many
        worker deaths on the same record, the record is set aside (``crash-loop``).
        """
        _check_name("topology", name)
        if processing_guarantee not in GUARANTEES:
            raise TopologyError(
                f"processing_guarantee {processing_guarantee!r}: use one of {', '.join(GUARANTEES)}"
            )
        if reactor_timeout <= 0:
            raise TopologyError("reactor_timeout must be > 0 seconds")
        if crash_loop_limit < 2:
            raise TopologyError("crash_loop_limit must be >= 2 (one death may be a coincidence)")
        self.processing_guarantee = processing_guarantee
        self.reactor_timeout = reactor_timeout
        self.crash_loop_limit = crash_loop_limit
        self.name = name
        self.hierarchy = (
            capabilities
            if isinstance(capabilities, CapabilityHierarchy)
            else CapabilityHierarchy(capabilities)
        )
        self.default_partitions = partitions
        self.namespace = (
            namespace if namespace is not None else os.environ.get("PACKETFLOW_NAMESPACE")
        )
        self.max_record_bytes = max_record_bytes
        self.broker = broker
        self.security = security or Security()
        if allow_unsigned is not None:
            if security is not None and security.allow_unsigned != allow_unsigned:
                raise TopologyError("allow_unsigned= contradicts security=")
            self.security.allow_unsigned = allow_unsigned
        self.effect_handlers: dict[type[Effect], EffectHandler] = {}
        self.reactors: dict[str, ReactorSpec] = {}
        self.agents: dict[str, AgentSpec] = {}
        self.topics: dict[str, int] = {}
        self.routes: dict[type[Intent], str] = {}
        # topics whose records may come without pf-type: taken as this type (opt-in per topic)
        self.default_types: dict[str, type[Intent]] = {}
        self._compacted: set[str] = set()
        self._internal: set[str] = set()  # engine-managed topics no effect may write to
        self.reply_topics: tuple[str, ...] = tuple(reply_topics)
        for reply_topic in self.reply_topics:
            _check_name("topic", reply_topic)

    # -- declaration ---------------------------------------------------------------------

    def topic(
        self,
        name: str,
        partitions: int | None = None,
        *,
        default_type: type[Intent] | None = None,
    ) -> str:
        """Declare a topic (created by workers at start); returns its name.

        ``default_type``: records arriving without a ``pf-type`` header are taken as this
        type (for producers that cannot set headers); without it such records are refused.
        """
        _check_name("topic", name)
        count = partitions or self.topics.get(name) or self.default_partitions
        self.topics[name] = count
        if default_type is not None:
            self._check_type_name(default_type)
            known = self.default_types.setdefault(name, default_type)
            if known is not default_type:
                raise TopologyError(f"topic {name!r} already has default type {known.intent_type}")
        return name

    def register_effect(self, effect_type: type[Effect], handler: EffectHandler) -> None:
        """Carry out effects of ``effect_type`` (a subclass of ``Effect``) with ``handler``:
        how a substrate or an interface adds an effect of its own."""
        if not (isinstance(effect_type, type) and issubclass(effect_type, Effect)):
            raise TopologyError(f"{effect_type!r} is not a subclass of packetflow.Effect")
        if effect_type in BUILTIN_EFFECTS:
            raise TopologyError(f"{effect_type.__name__} is the engine's own effect")
        self.effect_handlers[effect_type] = handler

    def route(self, intent_type: type[Intent], topic: str) -> None:
        """Send intents of ``intent_type`` to ``topic`` unless an emit names another."""
        self._check_type_name(intent_type)
        self.topic(topic)
        self.routes.setdefault(intent_type, topic)

    def _check_type_name(
        self, intent_type: type[Intent], also: dict[str, type[Intent]] | None = None
    ) -> None:
        name = intent_type.intent_type
        known = self.intent_types.get(name) or (also or {}).get(name)
        if known is not None and known is not intent_type:
            raise TopologyError(f"two intent classes share the type name {name!r}")

    def reactor(
        self,
        intent: Any,
        *,
        topic: str,
        state: Any = None,
        name: str | None = None,
        partitions: int | None = None,
        emits: Iterable[type[Intent]] = (),
        backpressure: Backpressure | None = None,
        key_by: KeyBy | None = None,
        public: bool = False,
        timeout: float | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function for ``intent`` (a class or union) read from ``topic``.

        ``state`` makes it stateful (a pydantic model class, a factory or a JSON value);
        ``emits`` names the intent types it sends, for descriptions and graphs;
        ``backpressure`` runs it behind a bounded buffer with that strategy
        (``packetflow.streams``); ``key_by`` (a field name or a function of the intent)
        re-keys its input through an internal repartition topic first. ``public=True``
        accepts intent types that require no capability and are not internal, from anyone
        who can produce to ``topic`` (refused otherwise). ``timeout`` (async reactors): the
        seconds one intent may take, default the topology's ``reactor_timeout``.
        """
        types = intent_types_of(intent)
        if timeout is not None and timeout <= 0:
            raise TopologyError("timeout must be > 0 seconds")
        if backpressure is not None and self.exactly_once:
            raise TopologyError(
                "backpressure strategies run a reactor outside the batch's transaction: "
                "they cannot be used with processing_guarantee='exactly_once'"
            )

        def register(fn: F) -> F:
            self.check_authorised(f"reactor {name or fn.__name__}", types, public)
            spec = ReactorSpec.build(
                fn,
                types,
                topic,
                state,
                name,
                tuple(emits),
                backpressure=backpressure,
                public=public,
                timeout=timeout,
            )
            self._check_new_name(spec.name)
            declared: dict[str, type[Intent]] = {}
            for t in types:  # check everything before changing anything
                self._check_type_name(t, declared)
                declared[t.intent_type] = t
            if key_by is not None:
                source = self.rekey(spec.name, topic, types, key_by, partitions, public)
                spec = dataclasses.replace(spec, topic=source)
            self.topic(spec.topic, partitions)
            for t in types:
                self.routes.setdefault(t, topic)
            self.reactors[spec.name] = spec
            return fn

        return register

    def rekey(
        self,
        name: str,
        topic: str,
        types: tuple[type[Intent], ...],
        key_by: KeyBy,
        partitions: int | None = None,
        public: bool = False,
    ) -> str:
        """Re-key ``topic``'s intents by ``key_by`` for ``name``; returns the topic to read."""
        target = self.names.repartition(name)
        self.topic(topic, partitions)
        spec = Repartition(
            name=f"{name}.rekey",
            topic=topic,
            intent_types=types,
            key_by=key_by,
            target=target,
            partitions=partitions,
            public=public,
        )
        self.add_agent(spec, partitions)
        return target

    def check_authorised(
        self, name: str, types: Iterable[type[Intent]], public: bool
    ) -> None:
        """Refuse a consumer of intent types anyone could send unless it says ``public``.

        An intent type that requires no capability and is not internal can be produced by
        anyone who can write to its topic, with any content: reading it must be a choice.
        """
        if public:
            return
        open_types = [
            t.intent_type for t in types if not t.required_capabilities and not t.internal
        ]
        if open_types:
            raise TopologyError(
                f"{name} consumes {', '.join(open_types)}, which requires no capability and "
                "is not internal, so anyone who can produce to its topic can send it. "
                "Declare requires=[...] on the intent, internal=True if only reactors emit "
                f"it (workers then seal it), or pass public=True to accept it from anyone"
            )

    def _check_new_name(self, name: str) -> None:
        _check_name("reactor", name)
        if name in self.reactors or name in self.agents:
            raise TopologyError(f"a reactor or agent named {name!r} is registered twice")

    def add_agent(self, spec: AgentSpec, partitions: int | None = None) -> AgentSpec:
        """Register an agent (a window, a table, ...) made by a substrate."""
        self._check_new_name(spec.name)
        self.check_authorised(f"{spec.kind} {spec.name}", spec.intent_types, spec.public)
        declared: dict[str, type[Intent]] = {}
        for t in spec.intent_types:
            self._check_type_name(t, declared)
            declared[t.intent_type] = t
        self.topic(spec.topic, partitions)
        for extra in spec.topics():
            self.topic(extra.name, extra.partitions)
            if extra.compacted:
                self._compacted.add(extra.name)
            if extra.internal:
                self._internal.add(extra.name)
        for t in spec.intent_types:
            self.routes.setdefault(t, spec.topic)
        self.agents[spec.name] = spec
        return spec

    def consumers(self) -> list[ReactorSpec | AgentSpec]:
        """Every reactor and agent: what reads the topology's source topics."""
        return [*self.reactors.values(), *self.agents.values()]

    @property
    def exactly_once(self) -> bool:
        return self.processing_guarantee == "exactly_once"

    @property
    def copartitioned(self) -> bool:
        """Whether the group must give a worker the same partition numbers of every topic."""
        return any(a.copartitioned for a in self.agents.values())

    # -- derived views -------------------------------------------------------------------

    @property
    def intent_types(self) -> dict[str, type[Intent]]:
        """Every intent type the topology consumes or routes, by wire type name."""
        out: dict[str, type[Intent]] = {}
        for spec in self.consumers():
            for t in spec.intent_types:
                out[t.intent_type] = t
        for t in self.routes:
            out[t.intent_type] = t
        return out

    @property
    def known_types(self) -> dict[str, type[Intent]]:
        """Every intent type the topology consumes, routes or names in a reactor's or
        agent's ``emits=``: what a client can decode when it reads or asks."""
        out = dict(self.intent_types)
        for spec in self.consumers():
            for t in spec.emits:
                out.setdefault(t.intent_type, t)
        return out

    def intent_type(self, name: str) -> type[Intent]:
        """Look up an intent class by wire type name or class name."""
        types = self.intent_types
        if name in types:
            return types[name]
        matches = [t for t in types.values() if t.__name__ == name]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(sorted(types)) or "none"
        raise TopologyError(f"unknown intent type {name!r} (known: {known})")

    @property
    def names(self) -> TopicNames:
        """The names of the topics the engine manages for this topology."""
        return TopicNames(self.name, self.namespace)

    def physical(self, topic: str) -> str:
        """The broker-side name of ``topic`` (namespaced)."""
        return f"{self.namespace}.{topic}" if self.namespace else topic

    # the engine's topics, by name (see TopicNames)

    @property
    def group_id(self) -> str:
        return self.names.group

    @property
    def dead_letter_topic(self) -> str:
        return self.names.dead_letters

    @property
    def denied_topic(self) -> str:
        return self.names.denied

    @property
    def audit_topic(self) -> str:
        return self.names.audit

    @property
    def revocations_topic(self) -> str:
        return self.names.revocations

    @property
    def late_topic(self) -> str:
        return self.names.late

    @property
    def drops_topic(self) -> str:
        return self.names.drops

    @property
    def replies_topic(self) -> str:
        return self.names.replies

    @property
    def members_topic(self) -> str:
        return self.names.members

    @property
    def set_aside_topics(self) -> tuple[str, ...]:
        return self.names.set_aside

    @property
    def set_aside_bytes(self) -> int:
        """``max.message.bytes`` of the set-aside topics: any record a source topic can hold
        (the larger of ``max_record_bytes`` and the broker's default) plus the headers added."""
        return max(self.max_record_bytes, BROKER_MAX_MESSAGE_BYTES) + SET_ASIDE_HEADROOM

    def internal_topics(self) -> set[str]:
        """Topics (logical) the engine manages: no effect writes to them, whatever an intent
        says (revocations, audit, set-aside topics, changelogs, repartition, replies)."""
        names = self.names
        out = {names.revocations, names.audit, names.replies, names.members, *names.set_aside}
        out.update(self._internal)
        out.update(store.changelog for store in self.stores())
        return out

    def reply_targets(self) -> set[str]:
        """Physical topics a request's ``reply_to`` may name: the replies topic, the
        declared ones, and the topics of agents that take replies (actors asking)."""
        return {self.physical(t) for t in (self.replies_topic, *self.reply_topics)} | (
            self.sealed_reply_targets()
        )

    def key_groups(self) -> dict[str, bytes]:
        """Physical topics whose records are partitioned by a group, the part of their key
        before a separator (``AgentSpec.key_group``): what producers of this topology set as
        their ``key_groups``."""
        return {
            self.physical(a.topic): a.key_group.encode()
            for a in self.agents.values()
            if a.key_group
        }

    def sealed_reply_targets(self) -> set[str]:
        """The reply targets only workers may name (agents' topics): a record whose context
        names one is sealed by the worker that sends it and refused without that seal."""
        return {self.physical(a.topic) for a in self.agents.values() if a.takes_replies}

    def changelog_topic(self, reactor: str) -> str:
        return self.names.changelog(reactor)

    def stores(self) -> list[StoreInfo]:
        """Every changelog-backed store of the topology's reactors and agents (with the
        timers store of agents that keep durable timers)."""
        names = self.names
        out = []
        for spec in self.reactors.values():
            if spec.state is not None:
                changelog = names.changelog(spec.name)
                out.append(StoreInfo(spec.name, "", spec.state, spec.topic, changelog))
        for agent in self.agents.values():
            for decl in agent.declared_stores():
                changelog = names.changelog(agent.name, decl.name or None)
                out.append(StoreInfo(agent.name, decl.name, decl.spec, agent.topic, changelog))
        return out

    def topic_for(self, intent_type: type[Intent]) -> str | None:
        return self.routes.get(intent_type)

    def source_topics(self) -> list[str]:
        """Topics read in the consumer group (each partition by one worker)."""
        topics = {spec.topic for spec in self.consumers()}
        return sorted(topics)

    def topic_specs(self) -> list[TopicSpec]:
        """Every topic a worker needs, with physical names."""
        set_aside = self.set_aside_topics
        limit = self.set_aside_bytes
        specs = [
            TopicSpec(
                self.physical(t),
                n,
                compacted=t in self._compacted,
                max_message_bytes=limit if t in set_aside else None,
            )
            for t, n in sorted(self.topics.items())
        ]
        wanted = [self.dead_letter_topic, self.denied_topic]  # late: declared by windows
        if any(spec.backpressure is not None for spec in self.reactors.values()):
            wanted.append(self.drops_topic)
        for name in wanted:
            if name not in self.topics:
                specs.append(
                    TopicSpec(self.physical(name), self.default_partitions, max_message_bytes=limit)
                )
        specs.append(TopicSpec(self.physical(self.audit_topic), self.default_partitions))
        for name in (self.replies_topic, *self.reply_topics):
            if name not in self.topics:
                specs.append(TopicSpec(self.physical(name), self.default_partitions))
        specs.append(TopicSpec(self.physical(self.revocations_topic), 1, compacted=True))
        specs.append(TopicSpec(self.physical(self.members_topic), 1, compacted=True))
        for store in self.stores():
            specs.append(
                TopicSpec(
                    self.physical(store.changelog), self.topics[store.topic], compacted=True
                )
            )
        return specs

    def topic_infos(self) -> list[TopicInfo]:
        infos = {t: TopicInfo(t, n) for t, n in sorted(self.topics.items())}
        for spec in self.consumers():
            info = infos[spec.topic]
            info.reactors.append(spec.name)
            info.intent_types.extend(t.intent_type for t in spec.intent_types)
        for intent_type, topic in self.routes.items():
            if intent_type.intent_type not in infos[topic].intent_types:
                infos[topic].intent_types.append(intent_type.intent_type)
        return list(infos.values())

    def emits(self, reactor: str) -> list[str]:
        """Topics a reactor or agent declared (``emits=``) that it sends to, for graphs."""
        out = []
        spec = self.reactors.get(reactor) or self.agents[reactor]
        for t in spec.emits:
            topic = self.routes.get(t)
            if topic is not None and topic not in out:
                out.append(topic)
        return out


def default_broker_url() -> str:
    """``$PACKETFLOW_BROKER``, else the embedded ``memory://`` broker."""
    return os.environ.get("PACKETFLOW_BROKER") or "memory://"
