"""The per-record path: decode, check deadline and capabilities, run reactors and agents.

Kept deliberately short because it runs for every record. Anything that cannot proceed is
written, with its original bytes and headers plus a reason, to the dead-letter or denied
topic, and the partition keeps flowing.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from packetflow.core.context import Context
from packetflow.core.effects import normalize
from packetflow.core.intent import Intent
from packetflow.core.reactor import ReactorSpec
from packetflow.engine.agent import AgentRuntime, AgentServices
from packetflow.engine.buffer import BufferedReactor
from packetflow.engine.clock import Clock
from packetflow.engine.codec import (
    ERROR_HEADER,
    MISSING_HEADER,
    REACTOR_HEADER,
    REASON_HEADER,
    SOURCE_HEADER,
    Decoder,
    Rejected,
    one_line,
    with_headers,
)
from packetflow.engine.interpreter import Interpreter, Origin
from packetflow.engine.metrics import WorkerMetrics
from packetflow.engine.security import Denial, Guard, audit_record
from packetflow.engine.state import StateStore
from packetflow.engine.transport import Producer, Record, TopicPartition

if TYPE_CHECKING:
    from packetflow.engine.topology import Topology



class Processor:
    """Processes batches of records of one topology; owns its state stores and agents."""

    def __init__(
        self,
        topology: Topology,
        producer: Producer,
        clock: Clock,
        metrics: WorkerMetrics,
        guard: Guard,
        caught_up: Callable[[TopicPartition], Awaitable[bool]] | None = None,
        owned: Callable[[], set[TopicPartition]] | None = None,
        pause: Callable[[str], None] | None = None,
        resume: Callable[[str], None] | None = None,
    ) -> None:
        self.topology = topology
        self.producer = producer
        self.clock = clock
        self.metrics = metrics
        self.guard = guard
        self.interpreter = Interpreter(topology, producer, clock)
        physical = topology.physical
        self.stores: dict[str, StateStore] = {
            spec.name: StateStore(
                spec.state, physical(topology.changelog_topic(spec.name)), physical(spec.topic)
            )
            for spec in topology.consumers()
            if spec.state is not None
        }
        self._dead_letter_topic = physical(topology.dead_letter_topic)
        self._denied_topic = physical(topology.denied_topic)
        self._audit_topic = physical(topology.audit_topic)
        self.agents: dict[str, AgentRuntime] = {}
        for agent_spec in topology.agents.values():
            source = physical(agent_spec.topic)
            self.agents[agent_spec.name] = agent_spec.runtime(
                AgentServices(
                    topology=topology,
                    producer=producer,
                    interpreter=self.interpreter,
                    clock=clock,
                    metrics=metrics,
                    store=self.stores.get(agent_spec.name),
                    source_topic=source,
                    divert=self.divert,
                    caught_up=_partition_probe(caught_up, source),
                    owned=_owned_probe(owned, source),
                )
            )
        self.tickers = [rt for rt in self.agents.values() if rt.ticks]
        self._drops_topic = physical(topology.drops_topic)
        self.buffered: dict[str, BufferedReactor] = {
            spec.name: BufferedReactor(
                spec,
                spec.backpressure,
                physical(spec.topic),
                self._react,
                self._drop,
                pause or _ignore,
                resume or _ignore,
                clock,
                metrics,
            )
            for spec in topology.reactors.values()
            if spec.backpressure is not None
        }
        unsigned = self.guard.allow_unsigned
        # physical topic -> (decoder, intent type name -> (reactors, agents))
        self._routes: dict[str, tuple[Decoder, dict[str, _Handlers], list[str]]] = {}
        for topic in topology.source_topics():
            by_type: dict[str, _Handlers] = {}
            types: dict[str, type[Intent]] = {}
            for spec in topology.reactors.values():
                if spec.topic == topic:
                    for t in spec.intent_types:
                        by_type.setdefault(t.intent_type, ([], []))[0].append(
                            (spec, self.buffered.get(spec.name))
                        )
                        types[t.intent_type] = t
            for agent in topology.agents.values():
                if agent.topic == topic:
                    for t in agent.intent_types:
                        by_type.setdefault(t.intent_type, ([], []))[1].append(
                            (agent.name, self.agents[agent.name])
                        )
                        types[t.intent_type] = t
            only = next(iter(types.values())) if len(types) == 1 else None
            decoder = Decoder(
                types,
                max_record_bytes=topology.max_record_bytes,
                default_type=only,
                unsigned_capabilities=unsigned,
            )
            inline = [
                s.name
                for s in topology.reactors.values()
                if s.topic == topic and s.backpressure is None
            ]
            self._routes[physical(topic)] = (decoder, by_type, inline)
        # partitions run concurrently only when a reactor can actually await something
        self.concurrent = any(s.is_async for s in topology.reactors.values())

    async def process(self, records: Sequence[Record]) -> None:
        """Process one partition's records in order."""
        if not records:
            return
        began = time.perf_counter()
        decoder, by_type, inline = self._routes[records[0].topic]
        authorize, audit_allowed = self.guard.authorize, self.guard.audit_allowed
        for record in records:
            try:
                intent, context, caps_raw, token_raw = decoder.decode_record(record)
            except Rejected as rejected:
                await self.dead_letter(record, rejected.reason, rejected.message)
                continue
            if context.deadline is not None and context.expired(self.clock.now()):
                await self.dead_letter(
                    record, "deadline", f"deadline {context.deadline.isoformat()} has passed"
                )
                continue
            intent_type = type(intent).intent_type
            required = intent.requirements()
            if required:
                denial = authorize(required, token_raw, caps_raw, context, intent_type)
                if denial is not None:
                    await self.deny(record, intent, context, denial)
                    continue
                if audit_allowed:
                    await self._audit_allowed(record, intent_type, context)
            reactors, agents = by_type[intent_type]
            for spec, buffered in reactors:
                if buffered is None:
                    await self._react(spec, record, intent, context)
                else:
                    await buffered.offer(record, intent, context)
            for name, agent in agents:
                await self._handle(name, agent, record, intent, context)
        # one latency observation per partition chunk: the whole chunk waited this long
        ms = (time.perf_counter() - began) * 1000
        for name in inline:
            self.metrics.observe_latency(name, ms, len(records))

    async def _handle(
        self, name: str, agent: AgentRuntime, record: Record, intent: Intent, context: Context
    ) -> None:
        try:
            await agent.handle(record, intent, context)
        except Exception as exc:  # like a reactor's: the record's failure, not the worker's
            self.metrics.errors[name] += 1
            await self.dead_letter(record, "reactor-error", one_line(exc), reactor=name)
            return
        self.metrics.processed[name] += 1

    async def tick(self) -> None:
        """Let time-driven agents (windows closing, ...) act."""
        for agent in self.tickers:
            await agent.tick()

    async def _react(
        self, spec: ReactorSpec, record: Record, intent: Intent, context: Context
    ) -> None:
        store = self.stores.get(spec.name)
        try:
            if store is not None:
                result: Any = spec.fn(intent, context, store.get(record.partition, record.key))
                if spec.is_async:
                    result = await result
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise TypeError(
                        "stateful reactor must return (new_state, effects), "
                        f"got {type(result).__name__}"
                    )
                new_state, effects = result
            else:
                effects = spec.fn(intent, context)
                if spec.is_async:
                    effects = await effects
            await self.interpreter.start(normalize(effects), Origin(spec.name, context, record.key))
        except Exception as exc:  # the reactor's failure is the record's, not the worker's
            self.metrics.errors[spec.name] += 1
            await self.dead_letter(record, "reactor-error", one_line(exc), reactor=spec.name)
            return
        if store is not None:
            store.put(record.partition, record.key, new_state)
        self.metrics.processed[spec.name] += 1

    async def dead_letter(
        self, record: Record, reason: str, message: str, *, reactor: str | None = None
    ) -> None:
        """Keep ``record`` byte for byte on the dead-letter topic, with why."""
        extra = [
            (REASON_HEADER, reason),
            (ERROR_HEADER, message[:1000]),
            (SOURCE_HEADER, _source(record)),
        ]
        if reactor:
            extra.append((REACTOR_HEADER, reactor))
        await self.producer.send(
            self._dead_letter_topic, record.value, record.key, with_headers(record.headers, extra)
        )
        self.metrics.dead_lettered[reason] += 1

    async def _drop(self, record: Record, extra: list[tuple[str, str]]) -> None:
        await self.divert(self._drops_topic, record, extra)

    async def divert(self, topic: str, record: Record, extra: list[tuple[str, str]]) -> None:
        """Copy ``record`` byte for byte to ``topic`` (physical) with ``extra`` headers."""
        await self.producer.send(
            topic,
            record.value,
            record.key,
            with_headers(record.headers, [*extra, (SOURCE_HEADER, _source(record))]),
        )

    async def deny(self, record: Record, intent: Intent, context: Context, denial: Denial) -> None:
        """Send an unauthorised intent to the denied topic with why; record it in the audit."""
        source = _source(record)
        extra = [(REASON_HEADER, denial.reason), (ERROR_HEADER, denial.message[:1000])]
        if denial.missing:
            extra.append((MISSING_HEADER, ", ".join(denial.missing)))
        extra.append((SOURCE_HEADER, source))
        await self.producer.send(
            self._denied_topic, record.value, record.key, with_headers(record.headers, extra)
        )
        intent_type = type(intent).intent_type
        self.metrics.denied[intent_type] += 1
        self.metrics.denied_reasons[denial.reason] += 1
        claims = denial.claims
        holder = claims.holder if claims else None
        await self.producer.send(
            self._audit_topic,
            audit_record(
                "denied",
                self.clock.time(),
                topology=self.topology.name,
                reason=denial.reason,
                error=denial.message[:1000],
                intent_type=intent_type,
                principal=context.principal,
                holder=holder,
                token_id=claims.token_id if claims else None,
                missing=list(denial.missing) or None,
                source=source,
            ),
            (holder or context.principal or "anonymous").encode(),
        )

    async def _audit_allowed(self, record: Record, intent_type: str, context: Context) -> None:
        entry = self.guard.last_verified(context)
        await self.producer.send(
            self._audit_topic,
            audit_record(
                "allowed",
                self.clock.time(),
                topology=self.topology.name,
                intent_type=intent_type,
                principal=context.principal,
                holder=entry.holder if entry else None,
                token_id=entry.token_id if entry else None,
                capabilities=[str(c) for c in context.capabilities],
                source=_source(record),
            ),
            ((entry.holder if entry else None) or context.principal or "anonymous").encode(),
        )

    async def write_changelogs(self) -> None:
        """Queue this batch's state changes on the changelog topics."""
        for store in self.stores.values():
            for partition, key, value in store.take_changes():
                await self.producer.send(store.changelog_topic, value, key, (), partition)


_Handlers = tuple[
    list[tuple[ReactorSpec, BufferedReactor | None]], list[tuple[str, AgentRuntime]]
]


def _ignore(topic: str) -> None:
    return None


def _partition_probe(
    caught_up: Callable[[TopicPartition], Awaitable[bool]] | None, topic: str
) -> Callable[[int], Awaitable[bool]]:
    async def probe(partition: int) -> bool:
        return caught_up is not None and await caught_up(TopicPartition(topic, partition))

    return probe


def _owned_probe(
    owned: Callable[[], set[TopicPartition]] | None, topic: str
) -> Callable[[], set[int]]:
    def probe() -> set[int]:
        return set() if owned is None else {tp.partition for tp in owned() if tp.topic == topic}

    return probe


def _source(record: Record) -> str:
    """``topic/partition/offset``: where a dead-lettered, denied or audited record came from."""
    return f"{record.topic}/{record.partition}/{record.offset}"
