"""The per-record path: decode, check deadline and authority, run reactors and agents.

Kept deliberately short because it runs for every record. No single record can stop a
partition: every failure about a record, at any stage, ends with that record set aside with
a reason (the dead-letter or denied topic, original bytes and headers) and the partition
flowing on. A failed record's effects never escape: a reactor's new state is encoded and its
plain outputs checked before anything is sent, and nothing is sent or stored when that
fails. Only failures that are not about a record (the broker, see
:class:`~packetflow.engine.transport.BrokerError`) leave this module, for the worker to
retry. Which failure goes where:

============================================  =========================================
stage                                         outcome (``pf-reason``)
============================================  =========================================
headers, size, type, version, context, JSON   dead letter (``empty``, ``oversized``, ...)
deadline passed                               dead letter ``deadline``
token, principal, seal, reply-to              denied + audited (``insufficient``, ...)
reactor or agent raised, bad result shape     dead letter ``reactor-error``
async reactor over its time limit             dead letter ``reactor-timeout``
effect cannot be carried out                  dead letter ``effect-error``,
                                              ``forbidden-topic``, ``bad-reply-to``,
                                              ``output-too-large``
new state does not encode or is too large     dead letter ``state-error``
the engine's own per-record code raised       dead letter ``internal-error``
set-aside copy larger than its topic takes    kept truncated (``pf-truncated``)
broker unreachable or refusing                :class:`BrokerError`: the worker retries
============================================  =========================================
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from packetflow.core.context import Context
from packetflow.core.effects import Reply
from packetflow.core.intent import Intent, field_getter
from packetflow.core.reactor import ReactorSpec
from packetflow.core.replies import Refused
from packetflow.core.tokens import BAD_REPLY_TO, KEY_MISMATCH
from packetflow.engine.agent import AgentRuntime, AgentServices, Origin, Timer
from packetflow.engine.clock import Clock
from packetflow.engine.codec import (
    CONTEXT_HEADER,
    ERROR_HEADER,
    MAC_HEADER,
    MISSING_HEADER,
    ORIGINAL_SIZE_HEADER,
    REACTOR_HEADER,
    REASON_HEADER,
    SHA256_HEADER,
    SOURCE_HEADER,
    TRUNCATED_HEADER,
    TYPE_HEADER,
    Decoder,
    Envelope,
    Rejected,
    decode_capabilities,
    header,
    one_line,
    sealed_authority,
)
from packetflow.engine.repartition import Repartition
from packetflow.engine.runtime.buffer import BufferedReactor
from packetflow.engine.runtime.interpreter import EffectError, Interpreter
from packetflow.engine.runtime.metrics import WorkerMetrics
from packetflow.engine.runtime.state import StateError, StateStore
from packetflow.engine.runtime.state_disk import DiskStateStore
from packetflow.engine.runtime.timers import NO_TIMERS, TimerStore
from packetflow.engine.runtime.tracing import Tracing
from packetflow.engine.security import Auditor, Denial, Guard
from packetflow.engine.topology import Topology
from packetflow.engine.transport import (
    BROKER_MAX_MESSAGE_BYTES,
    BrokerError,
    Producer,
    Record,
    TopicPartition,
    record_bytes,
)

log = logging.getLogger("packetflow.worker")


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
        limits: Mapping[str, int] | None = None,
        state_dir: str | Path | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        """``state_dir``: keep keyed state on disk there (RocksDB, one database per store
        and partition; see runtime.state_disk) instead of in memory."""
        self.topology = topology
        self.producer = producer
        self.clock = clock
        self.metrics = metrics
        self.guard = guard
        # physical topic -> the largest record it takes (max.message.bytes)
        self.limits = dict(limits or {})
        self.tracing = tracing
        self.interpreter = Interpreter(
            topology, producer, clock, sealer=guard.sealer, limits=self.limits, tracing=tracing
        )
        physical = topology.physical
        # every changelog-backed store, by (owner, store name); "" is an owner's main store
        self.all_stores: dict[tuple[str, str], StateStore] = {}
        for info in topology.stores():
            changelog = physical(info.changelog)
            limit = self.limits.get(changelog, BROKER_MAX_MESSAGE_BYTES)
            source = physical(info.topic)
            self.all_stores[(info.owner, info.name)] = (
                StateStore(info.spec, changelog, source, limit=limit)
                if state_dir is None
                else DiskStateStore(info.spec, changelog, source, state_dir, limit=limit)
            )
        self.stores = {owner: s for (owner, name), s in self.all_stores.items() if name == ""}
        self.timers = {
            name: TimerStore(physical(spec.topic), self.all_stores.get((name, "timers")))
            for name, spec in topology.agents.items()
            if spec.timers
        }
        self._dead_letter_topic = physical(topology.dead_letter_topic)
        self._denied_topic = physical(topology.denied_topic)
        audit_topic = physical(topology.audit_topic)
        self.auditor = Auditor(
            topology.name, lambda value, key: producer.send(audit_topic, value, key)
        )
        self._reply_targets = topology.reply_targets()
        self._sealed_reply_targets = topology.sealed_reply_targets()
        # what a record must be keyed by: its key field (by type: whether its requirements
        # name it), or on a repartition topic what ``key_by`` makes of it
        self._keyed: dict[type[Intent], bool] = {}
        self._unkeyed = {  # agents that address by something else: they check it themselves
            physical(spec.topic) for spec in topology.agents.values() if not spec.keyed_by_field
        }
        self._rekeyed: dict[str, Callable[[Intent], Any]] = {
            physical(spec.target): field_getter(spec.key_by, "key by")
            for spec in topology.agents.values()
            if isinstance(spec, Repartition)
        }
        self.agents: dict[str, AgentRuntime] = {}
        names, topics = topology.names, topology.topics
        for agent_spec in topology.agents.values():
            source = physical(agent_spec.topic)
            mine = {
                name: store
                for (owner, name), store in self.all_stores.items()
                if owner == agent_spec.name and name != "timers"
            }
            self.agents[agent_spec.name] = agent_spec.runtime(
                AgentServices(
                    names=names,
                    producer=producer,
                    effects=self.interpreter,
                    clock=clock,
                    metrics=metrics.registry,
                    source_topic=source,
                    stores=mine,
                    timers=self.timers.get(agent_spec.name) or NO_TIMERS,
                    dead_letter=self._agent_dead_letter,
                    set_aside=self.divert,
                    caught_up=_partition_probe(caught_up, source),
                    owned=_owned_probe(owned, source),
                    partitions=lambda topic: topics[topic],
                    failed=_counter(metrics.errors, agent_spec.name),
                    seal=guard.sealer.seal if guard.sealer else None,
                    authority=guard,
                )
            )
        self.tickers = [rt for rt in self.agents.values() if rt.ticks]
        self._agent_sources = {
            name: physical(spec.topic) for name, spec in topology.agents.items()
        }
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
                recheck=self._recheck,
            )
            for spec in topology.reactors.values()
            if spec.backpressure is not None
        }
        unsigned = self.guard.allow_unsigned
        # physical topic -> (decoder, intent type name -> (reactors, agents), inline reactors,
        # the types its records may have only as answers: AgentSpec.any_answer)
        self._routes: dict[str, _Route] = {}
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
            answering = [
                (a.name, self.agents[a.name])
                for a in topology.agents.values()
                if a.topic == topic and a.any_answer
            ]
            if answering:
                known: dict[str, type[Intent]] = {
                    **topology.known_types, Refused.intent_type: Refused
                }
                extra = {n: t for n, t in known.items() if n not in types}
                for name in extra:
                    by_type[name] = ([], list(answering))
                types.update(extra)
                answers_only = frozenset(extra)
            else:
                answers_only = frozenset()
            decoder = Decoder(
                types,
                max_record_bytes=topology.max_record_bytes,
                default_type=topology.default_types.get(topic),
                unsigned_capabilities=unsigned,
            )
            inline = [
                s.name
                for s in topology.reactors.values()
                if s.topic == topic and s.backpressure is None
            ]
            self._routes[physical(topic)] = (decoder, by_type, inline, answers_only)
        # partitions run concurrently only when a reactor can actually await something
        self.concurrent = any(s.is_async for s in topology.reactors.values())
        self._timers_fired = False  # in this batch: its changelogs wait for what they sent

    async def process(self, records: Sequence[Record]) -> None:
        """Process one partition's records in order."""
        if not records:
            return
        began = time.perf_counter()
        decoder, by_type, inline, answers_only = self._routes[records[0].topic]
        for record in records:
            try:
                await self._one(record, decoder, by_type, answers_only)
            except (BrokerError, AgentStopped):
                raise  # not about this record: the worker retries the batch, or stops
            except Exception as exc:  # a fault in the engine's own path: still not fatal
                log.exception("record %s: unexpected failure", _source(record),
                              extra=record_fields(record, None))  # fmt: skip
                await self.dead_letter(record, "internal-error", one_line(exc))
        # one latency observation per partition chunk: the whole chunk waited this long
        ms = (time.perf_counter() - began) * 1000
        for name in inline:
            self.metrics.observe_latency(name, ms, len(records))

    async def _one(
        self,
        record: Record,
        decoder: Decoder,
        by_type: dict[str, _Handlers],
        answers_only: frozenset[str],
    ) -> None:
        try:
            envelope = decoder.decode_record(record)
        except Rejected as rejected:
            await self.dead_letter(record, rejected.reason, rejected.message)
            return
        intent, context = envelope.intent, envelope.context
        if context.deadline is not None and context.expired(self.clock.now()):
            await self.dead_letter(
                record,
                "deadline",
                f"deadline {context.deadline.isoformat()} has passed",
                context=context,
            )
            return
        cls = type(intent)
        intent_type = cls.intent_type
        if answers_only and intent_type in answers_only and context.reply_to != record.topic:
            await self.dead_letter(
                record, "unknown-type",
                f"{intent_type} comes to {record.topic} only as an answer to its requests",
                context=context,
            )  # fmt: skip
            return
        denial = self._authorize(record, envelope, intent, context)
        if denial is not None:
            await self.deny(record, intent, context, denial)
            return
        if self.guard.audit_allowed and cls.required_capabilities:
            await self._audit_allowed(record, intent_type, context)
        if self.tracing is not None:
            with self.tracing.handling(record, context):
                await self._dispatch(by_type[intent_type], record, envelope, intent, context)
            return
        await self._dispatch(by_type[intent_type], record, envelope, intent, context)

    async def _dispatch(
        self,
        handlers: _Handlers,
        record: Record,
        envelope: Envelope,
        intent: Intent,
        context: Context,
    ) -> None:
        reactors, agents = handlers
        for spec, buffered in reactors:
            if buffered is None:
                await self._react(spec, record, intent, context)
            else:
                await buffered.offer(record, intent, context, envelope.token_raw)
        for name, agent in agents:
            await self._handle(name, agent, record, intent, context)

    def _authorize(
        self, record: Record, envelope: Envelope, intent: Intent, context: Context
    ) -> Denial | None:
        """None when the record may reach its reactors (its context then holds the
        granted capabilities and the verified principal)."""
        cls = type(intent)
        intent_type = cls.intent_type
        reply_to = context.reply_to
        guard = self.guard
        if reply_to is not None:
            if reply_to not in self._reply_targets:
                return Denial(
                    BAD_REPLY_TO,
                    f"reply_to {reply_to!r} is not a reply topic of {self.topology.name!r}",
                )
            # only workers direct answers to an agent's topic (an actor's ask): else a
            # requester could make the engine answer an ask it never made
            if (
                reply_to in self._sealed_reply_targets
                and not cls.internal
                and self._seal(record, envelope, intent_type) is not None
            ):
                return Denial(
                    BAD_REPLY_TO,
                    f"reply_to {reply_to!r} is an agent's topic, which only workers "
                    "name (this record carries no worker seal)",
                )
        required = intent.requirements()
        if cls.internal:
            denial = self._seal(record, envelope, intent_type)
            if denial is not None:
                return denial
            if not required and envelope.token_raw is None and envelope.caps_raw:
                # the grants a worker sealed with it (an MCP result sent with a call's kept
                # authority) go on with it while the token behind them holds
                if guard.authorize_vouched(context) is None:
                    context.__dict__["capabilities"] = decode_capabilities(envelope.caps_raw)
                return None
        if required:
            if (
                envelope.token_raw is None
                and envelope.caps_raw
                and envelope.mac_raw is not None
                and not guard.allow_unsigned
                and self._seal(record, envelope, intent_type) is None
            ):  # capabilities a worker vouches for (a schedule's kept grants): sealed
                context.__dict__["capabilities"] = decode_capabilities(envelope.caps_raw)
                denial = guard.authorize_plain(required, envelope.caps_raw, context, intent_type)
                return denial or guard.authorize_vouched(context)
            denial = guard.authorize(
                required, envelope.token_raw, envelope.caps_raw, context, intent_type
            )
            if denial is not None:
                return denial
            return self._key_mismatch(record, intent)
        elif not cls.internal:
            # public: nobody vouched for whoever the context names
            context.__dict__["principal"] = None
        return None

    async def _handle(
        self, name: str, agent: AgentRuntime, record: Record, intent: Intent, context: Context
    ) -> None:
        attempt = 0
        while True:
            try:
                await agent.handle(record, intent, context)
            except BrokerError:
                raise
            except Exception as exc:  # like a reactor's: the record's failure, not the worker's
                self.metrics.errors[name] += 1
                decision = agent.on_error(record, intent, exc)
                if decision == "stop":
                    raise AgentStopped(f"agent {name} stopped the worker: {one_line(exc)}") from exc
                if decision == "retry" and attempt < AGENT_RETRIES:
                    attempt += 1
                    await self.clock.sleep(0.1 * 2**attempt)
                    continue
                reason, message = _why(exc)
                await self.dead_letter(record, reason, message, reactor=name, context=context)
                return
            self.metrics.processed[name] += 1
            return

    async def _agent_dead_letter(self, record: Record, reason: str, message: str) -> None:
        await self.dead_letter(record, reason, message)

    async def agents_assigned(self, partitions: set[TopicPartition]) -> None:
        """Tell each agent (its timers first) which partitions of its source it now owns,
        their state already restored."""
        for name, agent, mine in self._agents_of(partitions):
            timers = self.timers.get(name)
            if timers is not None:
                timers.assigned(mine)
            await agent.assigned(mine)

    async def agents_revoked(self, partitions: set[TopicPartition]) -> None:
        """Tell each agent (its timers first) which partitions of its source it lost."""
        for name, agent, mine in self._agents_of(partitions):
            timers = self.timers.get(name)
            if timers is not None:
                timers.revoked(mine)
            await agent.revoked(mine)

    def _agents_of(
        self, partitions: set[TopicPartition]
    ) -> Iterator[tuple[str, AgentRuntime, set[int]]]:
        for name, agent in self.agents.items():
            source = self._agent_sources[name]
            mine = {tp.partition for tp in partitions if tp.topic == source}
            if mine:
                yield name, agent, mine

    async def tick(self, owned: Callable[[str], set[int]]) -> None:
        """Let time-driven agents act (windows closing, ...) and fire the clock timers due
        (``owned(physical topic)``: this worker's partitions of it)."""
        for agent in self.tickers:
            await agent.tick()
        if not self.timers:
            return
        now = int(self.clock.time() * 1000)
        for name, timers in self.timers.items():
            agent = self.agents[name]
            for timer in timers.clock_due(owned(timers.source_topic), now):
                await self._fire(name, agent, timer)

    async def _fire(self, name: str, agent: AgentRuntime, timer: Timer) -> None:
        self._timers_fired = True
        try:
            await agent.on_timer(timer)
        except BrokerError:
            raise
        except Exception as exc:  # no record to set aside: said, counted, and the timer is gone
            self.metrics.errors[name] += 1
            log.error("%s: timer %s of key %r failed: %s", name, timer.name, timer.key, exc)

    def next_timer(self) -> int | None:
        """When the earliest clock timer of any agent here is due (ms), or None."""
        dues = [
            due
            for timers in self.timers.values()
            for p in timers.partitions()
            if (due := timers.next_due(p)) is not None
        ]
        dues.extend(due for agent in self.tickers if (due := agent.next_due()) is not None)
        return min(dues) if dues else None

    async def _react(
        self, spec: ReactorSpec, record: Record, intent: Intent, context: Context
    ) -> None:
        store = self.stores.get(spec.name)
        interpreter = self.interpreter
        origin = Origin(spec.name, context, record.key)
        try:
            if store is not None:
                result: Any = spec.fn(intent, context, store.get(record.partition, record.key))
                if spec.is_async:
                    result = await self._in_time(spec, result)
                if not (isinstance(result, tuple) and len(result) == 2):
                    raise TypeError(
                        "stateful reactor must return (new_state, effects), "
                        f"got {type(result).__name__}"
                    )
                new_state, effects = result
                prepared = interpreter.prepare(effects, origin)
                encoded = store.encode(new_state, record.key)  # before anything is sent
            else:
                effects = spec.fn(intent, context)
                if spec.is_async:
                    effects = await self._in_time(spec, effects)
                prepared = interpreter.prepare(effects, origin)
            for effect in prepared.compositions:
                await interpreter.run(effect, origin)
        except BrokerError:
            raise
        except Exception as exc:  # the reactor's failure is the record's, not the worker's
            self.metrics.errors[spec.name] += 1
            reason, message = _why(exc)
            await self.dead_letter(record, reason, message, reactor=spec.name, context=context)
            return
        outgoing = prepared.outgoing
        done = interpreter.send_now(outgoing)  # without a coroutine where it can
        if done < len(outgoing):
            await interpreter.send(outgoing[done:])
        if store is not None:
            store.put_encoded(record.partition, record.key, new_state, encoded)
        self.metrics.processed[spec.name] += 1

    async def _in_time(self, spec: ReactorSpec, awaitable: Awaitable[Any]) -> Any:
        limit = spec.timeout or self.topology.reactor_timeout
        try:
            return await asyncio.wait_for(awaitable, limit)
        except TimeoutError:
            raise _Timeout(f"{spec.name} took longer than {limit:g}s") from None

    async def _recheck(self, record: Record, intent: Intent, token_raw: bytes | None) -> bool:
        """As a buffered intent leaves its buffer: is its token still valid? (denied if not)"""
        denial = self.guard.still_valid(token_raw)
        if denial is None:
            return True
        await self.deny(record, intent, None, denial)
        return False

    # -- setting aside -------------------------------------------------------------------

    async def dead_letter(
        self,
        record: Record,
        reason: str,
        message: str,
        *,
        reactor: str | None = None,
        context: Context | None = None,
    ) -> None:
        """Keep ``record`` byte for byte on the dead-letter topic, with why (and tell its
        requester, if it is a request: ``context``)."""
        extra = [(REASON_HEADER, reason), (ERROR_HEADER, message)]
        if reactor:
            extra.append((REACTOR_HEADER, reactor))
        await self.divert(self._dead_letter_topic, record, extra)
        self.metrics.dead_lettered[reason] += 1
        log.info("dead-lettered %s (%s): %s", _source(record), reason, message,
                 extra=record_fields(record, context, reason=reason, reactor=reactor))  # fmt: skip
        if context is not None and context.requester:
            await self._refuse(record, context, reason, message)

    async def _refuse(self, record: Record, context: Context, reason: str, message: str) -> None:
        """Answer a request that was set aside with a Refused (see runtime.replies)."""
        if context.reply_to not in self._reply_targets:
            return  # nowhere the engine may write: the requester waits out its timeout
        if context.reply_to in self._sealed_reply_targets and not self._sealed(record):
            return  # an agent's topic, named by no worker: its ask ids are not for anyone
        refused = Refused(reason=reason, error=message[:1000], source=_source(record))
        origin = Origin("packetflow", context, record.key)
        await self.interpreter.send(self.interpreter.prepare([Reply(refused)], origin).outgoing)

    def _key_mismatch(self, record: Record, intent: Intent) -> Denial | None:
        """A record whose requirements name its key field must be keyed by that field (on a
        repartition topic: by what ``key_by`` makes of it): else a capability for one key
        would act on another key's state. Sealed records are a worker's choice, not checked."""
        cls = type(intent)
        field = cls.key_field
        keyed = self._keyed.get(cls)
        if keyed is None:
            keyed = self._keyed[cls] = field is not None and any(
                "{" + field + "}" in cap.resource for cap in cls.required_capabilities
            )
        if not keyed or record.topic in self._unkeyed:
            return None
        rekey = self._rekeyed.get(record.topic)
        expected = rekey(intent) if rekey is not None else intent.partition_key()
        if expected is None or record.key == str(expected).encode():
            return None
        got = record.key.decode(errors="replace") if record.key is not None else None
        return Denial(
            KEY_MISMATCH,
            f"{cls.intent_type} is keyed {got!r} but its {field} is {str(expected)!r}: the "
            "capability checked is for that one, the record would act on another's",
        )

    def _seal(self, record: Record, envelope: Envelope, intent_type: str) -> Denial | None:
        """None when ``record`` carries a valid worker seal (see security.seal)."""
        assert record.value is not None  # the decoder refuses empty records
        return self.guard.check_seal(
            record.topic,
            record.key,
            intent_type,
            record.value,
            envelope.context_raw,
            envelope.token_raw or envelope.caps_raw or None,
            envelope.mac_raw,
        )

    def _sealed(self, record: Record) -> bool:
        """Whether ``record`` carries a valid worker seal, read from its own headers (where
        no envelope is at hand: a request set aside)."""
        type_name = header(record.headers, TYPE_HEADER)
        if type_name is None or record.value is None:
            return False
        return (
            self.guard.check_seal(
                record.topic,
                record.key,
                type_name.decode(errors="replace"),
                record.value,
                header(record.headers, CONTEXT_HEADER),
                sealed_authority(record.headers),
                header(record.headers, MAC_HEADER),
            )
            is None
        )

    async def _drop(self, record: Record, extra: list[tuple[str, str]]) -> None:
        await self.divert(self._drops_topic, record, extra)

    async def divert(self, topic: str, record: Record, extra: list[tuple[str, str]]) -> None:
        """Copy ``record`` byte for byte to ``topic`` (physical) with ``extra`` headers and
        its source; a copy larger than the topic takes is kept truncated, with its size and
        SHA-256, rather than lost."""
        headers = [*record.headers, *_encoded([*extra, (SOURCE_HEADER, _source(record))])]
        value = record.value
        limit = self.limits.get(topic, BROKER_MAX_MESSAGE_BYTES)
        if record_bytes(record.key, value, headers) > limit:
            value, headers = self._truncated(record, headers, limit)
        await self.producer.send(topic, value, record.key, headers)

    def _truncated(
        self, record: Record, headers: list[tuple[str, bytes]], limit: int
    ) -> tuple[bytes, list[tuple[str, bytes]]]:
        original = record.value or b""
        self.metrics.truncated += 1
        marks = _encoded(
            [
                (TRUNCATED_HEADER, "true"),
                (ORIGINAL_SIZE_HEADER, str(len(original))),
                (SHA256_HEADER, hashlib.sha256(original).hexdigest()),
            ]
        )
        kept = [*headers, *marks]
        room = limit - record_bytes(record.key, b"", kept)
        if room < 0:  # the headers alone are too large: keep the engine's, drop the sender's
            kept = [h for h in kept if h[0].startswith("pf-") and h not in record.headers]
            room = max(limit - record_bytes(record.key, b"", kept), 0)
        log.warning(
            "set-aside copy of %s is too large for its topic: kept %d of %d bytes (truncated)",
            _source(record),
            min(room, len(original)),
            len(original),
        )
        return original[:room], kept

    async def deny(
        self, record: Record, intent: Intent, context: Context | None, denial: Denial
    ) -> None:
        """Send an unauthorised intent to the denied topic with why; record it in the audit."""
        source = _source(record)
        extra = [(REASON_HEADER, denial.reason), (ERROR_HEADER, denial.message)]
        if denial.missing:
            extra.append((MISSING_HEADER, ", ".join(denial.missing)))
        await self.divert(self._denied_topic, record, extra)
        log.info("denied %s (%s): %s", _source(record), denial.reason, denial.message,
                 extra=record_fields(record, context, reason=denial.reason))  # fmt: skip
        if context is not None and context.requester:
            await self._refuse(record, context, denial.reason, denial.message)
        intent_type = type(intent).intent_type
        self.metrics.denied[intent_type] += 1
        self.metrics.denied_reasons[denial.reason] += 1
        claims = denial.claims
        await self.auditor.record(
            "denied",
            self.clock.time(),
            reason=denial.reason,
            error=denial.message[:1000],
            intent_type=intent_type,
            principal=context.principal if context else None,
            holder=claims.holder if claims else None,
            token_id=claims.token_id if claims else None,
            missing=list(denial.missing) or None,
            source=source,
        )

    async def _audit_allowed(self, record: Record, intent_type: str, context: Context) -> None:
        entry = self.guard.last_verified(context)
        await self.auditor.record(
            "allowed",
            self.clock.time(),
            intent_type=intent_type,
            principal=context.principal,
            holder=entry.holder if entry else None,
            token_id=entry.token_id if entry else None,
            capabilities=[str(c) for c in context.capabilities],
            source=_source(record),
        )

    async def write_changelogs(self) -> None:
        """Queue this batch's state changes on the changelog topics (every store: the
        main ones, an agent's others, its timers)."""
        if self._timers_fired:
            self._timers_fired = False
            if not self.topology.exactly_once:
                # a timer has no input offset to read again: what it sent is acknowledged
                # before the state that says it fired (else a crash between could lose it)
                await self.producer.flush()
        send = self.producer.send
        for store in self.all_stores.values():
            topic = store.changelog_topic
            if store.durable:
                for partition, key, value in store.take_changes():
                    store.sent(partition, await send(topic, value, key, (), partition))
            else:
                for partition, key, value in store.take_changes():
                    await send(topic, value, key, (), partition)

    async def persist_state(self) -> None:
        """The changelog records sent are acknowledged (or committed): stores on disk keep
        them."""
        fenced = self.topology.exactly_once  # no zombie writes between its transactions
        for store in self.all_stores.values():
            if store.durable:
                await store.persist(fenced=fenced)

    def close_stores(self) -> None:
        for store in self.all_stores.values():
            store.close()


class _Timeout(Exception):
    reason = "reactor-timeout"


class AgentStopped(RuntimeError):
    """An agent decided that a record's failure must stop the worker (``on_error``)."""


AGENT_RETRIES = 3  # times an agent's "retry" decision runs a record again before setting it aside


def _why(exc: Exception) -> tuple[str, str]:
    """The ``pf-reason`` and ``pf-error`` of a reactor's or agent's failure: the engine's own
    refusals carry their reason; anything else the user's code raised is a reactor-error."""
    if isinstance(exc, (EffectError, StateError, _Timeout)):
        return exc.reason, str(exc).splitlines()[0]
    return "reactor-error", one_line(exc)


def record_fields(record: Record, context: Context | None, **more: Any) -> dict[str, Any]:
    """What a log line about ``record`` carries besides its message (``extra=``): where it
    is, and its intent and trace ids, so a JSON log line finds the record and its trace."""
    fields: dict[str, Any] = {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
    }  # fmt: skip
    if context is not None:
        fields.update(intent_id=context.intent_id, trace_id=context.trace_id,
                      span_id=context.span_id)  # fmt: skip
    fields.update((k, v) for k, v in more.items() if v is not None)
    return fields


_Handlers = tuple[
    list[tuple[ReactorSpec, BufferedReactor | None]], list[tuple[str, AgentRuntime]]
]
_Route = tuple[Decoder, dict[str, _Handlers], list[str], frozenset[str]]


def _ignore(topic: str) -> None:
    return None


def _counter(counts: Counter[str], name: str) -> Callable[[], None]:
    def count() -> None:
        counts[name] += 1

    return count


def _encoded(headers: list[tuple[str, str]]) -> list[tuple[str, bytes]]:
    """Set-aside headers as UTF-8, each value cut to at most 1,000 bytes."""
    return [
        (name, value.encode()[:1000].decode(errors="ignore").encode()) for name, value in headers
    ]


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
