"""Runs effects: turns the data a reactor returned into sends, calls, waits and retries.

A reactor's result is handled in two steps, so that a record that fails never lets its
effects escape. :meth:`Interpreter.prepare` checks and encodes every plain send at the top
level (emits, replies, fan-outs): the topic must be one the topology declares and not one the
engine manages (``forbidden-topic``), a reply must go to a reply topic (``bad-reply-to``),
each record must fit its topic (``output-too-large``), and internal intents are sealed.
Only when the whole result is good are the compositions run (``sequential``, ``parallel``,
``pipeline``, ``retry``, ... awaited in place with their real semantics, so a
``Sequential`` only starts its second step once the broker acknowledged the first) and the
prepared records queued on the producer, their acknowledgements awaited once per batch.
What a composition already did before it failed (a call, an acknowledged send) stays done.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Mapping
from typing import Any, NamedTuple, NoReturn

from packetflow.core.context import Context
from packetflow.core.effects import (
    BUILTIN_EFFECTS,
    Call,
    Conditional,
    Delivery,
    Effect,
    Effects,
    Emit,
    FanOut,
    Parallel,
    Pipeline,
    Reply,
    Retry,
    Sequential,
)
from packetflow.core.intent import Intent
from packetflow.engine.agent import EffectHandler, Origin
from packetflow.engine.clock import Clock
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTEXT_HEADER,
    MAC_HEADER,
    TOKEN_HEADER,
    authority_header,
    encode,
    encode_inherited,
    fixed_headers,
    header,
    sealed_authority,
)
from packetflow.engine.runtime.tracing import TRACEPARENT, Tracing, traceparent
from packetflow.engine.security.seal import Sealer
from packetflow.engine.topology import Topology
from packetflow.engine.transport import BROKER_MAX_MESSAGE_BYTES, Producer, record_bytes


class EffectError(RuntimeError):
    """An effect that cannot be carried out as written; ``reason`` is the ``pf-reason``."""

    def __init__(self, message: str, reason: str = "effect-error") -> None:
        super().__init__(message)
        self.reason = reason


class Outgoing(NamedTuple):
    """A record checked and encoded, ready for the producer."""

    topic: str  # physical
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]


class Prepared(NamedTuple):
    """A reactor's result made ready: plain sends encoded, compositions still to run."""

    outgoing: list[Outgoing]
    compositions: list[Effect]


class Interpreter:
    def __init__(
        self,
        topology: Topology,
        producer: Producer,
        clock: Clock,
        *,
        sealer: Sealer | None = None,
        limits: Mapping[str, int] | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.topology = topology
        self.tracing = tracing  # on: each record produced carries a W3C traceparent
        self.producer = producer
        self.clock = clock
        self.sealer = sealer
        self.emitted = 0
        # physical topic -> the largest record it takes (max.message.bytes)
        self.limits = dict(limits or {})
        physical = topology.physical
        internal = topology.internal_topics()
        self._writable = {physical(t) for t in topology.topics if t not in internal}
        self._internal = {physical(t) for t in internal}
        self._reply_targets = topology.reply_targets()
        # what names one of these as reply_to is sealed (an actor's ask, and what its callee
        # sends on in that context): receivers refuse it unsealed
        self._sealed_reply_targets = topology.sealed_reply_targets()
        self._topics: dict[tuple[type[Intent], str | None], str] = {}
        # intent type -> (topic, fixed headers or None when internal, room; see _route)
        self._routes: dict[type[Intent], tuple[str, tuple[tuple[str, bytes], ...] | None, int]] = {}
        self._handlers = dict(topology.effect_handlers)
        # where plain capabilities are refused, a context holding them without a token got
        # them from a worker (a schedule's kept grants): what it sends is sealed, so its
        # receivers take them as vouched for
        self._vouches = not topology.security.allow_unsigned

    # -- a reactor's result --------------------------------------------------------------

    def prepare(self, effects: Effects, origin: Origin) -> Prepared:
        """Check and encode the plain sends of a reactor's result (an intent, an effect, a
        list of them, or None); raises :class:`EffectError` (or ``TypeError`` for what is
        neither) before anything is sent when one cannot be carried out."""
        outgoing: list[Outgoing] = []
        compositions: list[Effect] = []
        if effects is None:
            return Prepared(outgoing, compositions)
        if isinstance(effects, (Intent, Effect)):
            effects = [effects]
        for effect in effects:
            if isinstance(effect, Intent):  # the common case: a bare intent, emitted
                outgoing.append(self._emitted(effect, None, origin))
            elif type(effect) is Emit and effect.context is None and effect.topic is None:
                outgoing.append(self._emitted(effect.intent, effect.key, origin))
            elif isinstance(effect, (Emit, Reply, FanOut)):
                outgoing.extend(self._records(effect, origin))
            elif isinstance(effect, Effect):
                if not isinstance(effect, BUILTIN_EFFECTS):
                    self._handler(effect)  # unknown: refused now, before anything is sent
                compositions.append(effect)
            else:
                raise TypeError(
                    f"reactor returned {type(effect).__name__}, not an effect or intent"
                )
        return Prepared(outgoing, compositions)

    def _emitted(self, intent: Intent, key: str | None, origin: Origin) -> Outgoing:
        """An intent emitted to its routed topic with the inherited context, encoded
        straight into its record (no context model, no wrapper): every output takes this."""
        cls = type(intent)
        route = self._routes.get(cls)
        if route is None:
            route = self._route(cls)
        topic, fixed, room = route
        if key is None:
            key = intent.partition_key()
        raw_key = None if key is None else key.encode()
        context = origin.context
        vouched = self._vouched(context)
        if fixed is None or vouched or context.reply_to in self._sealed_reply_targets:
            # sealed (internal, vouched capabilities, or answers go to an agent)
            return self._record(
                topic, intent, origin.context.inherit(origin.reactor), raw_key, vouched
            )
        value = intent.__pydantic_serializer__.to_json(intent)
        context_raw = encode_inherited(origin.context, origin.reactor)
        headers = [*fixed, (CONTEXT_HEADER, context_raw)]
        size = len(value) + len(context_raw) + (len(raw_key) if raw_key else 0)
        authority = authority_header(origin.context)
        if authority is not None:
            headers.append(authority)
            size += len(authority[1])
        if self.tracing is not None:  # the span that sends it: the origin's handling
            parent = origin.context
            header = f"00-{parent.trace_id}-{parent.span_id}-01".encode()
            headers.append((TRACEPARENT, header))
            size += len(TRACEPARENT) + len(header)
        if size > room:  # maybe too large: the exact size decides, as for every record
            exact = record_bytes(raw_key, value, headers)
            if exact > self.limits.get(topic, BROKER_MAX_MESSAGE_BYTES):
                self._refuse_size(cls, topic, exact)
        return Outgoing(topic, value, raw_key, headers)

    def _vouched(self, context: Context) -> bool:
        """Whether ``context`` holds capabilities a worker vouched for (no token, where
        plain ones are refused): what it sends is sealed so its receivers take them."""
        return self._vouches and context.token is None and bool(context.capabilities)

    def _route(self, cls: type[Intent]) -> tuple[str, tuple[tuple[str, bytes], ...] | None, int]:
        """Where ``cls`` goes by default, its fixed headers (None: internal), and the room
        its key, value, context and authority surely fit in (record_bytes of a record with
        these headers, a context and the longer authority header, less those four)."""
        topic = self._topic_for_type(cls)
        if cls.internal:
            route: tuple[str, tuple[tuple[str, bytes], ...] | None, int] = (topic, None, 0)
        else:
            fixed = fixed_headers(cls)
            longest = max(TOKEN_HEADER, CAPABILITIES_HEADER, key=len)
            overhead = record_bytes(None, None, [*fixed, (CONTEXT_HEADER, b""), (longest, b"")])
            route = (topic, fixed, self.limits.get(topic, BROKER_MAX_MESSAGE_BYTES) - overhead)
        self._routes[cls] = route
        return route

    async def finish(self, prepared: Prepared, origin: Origin) -> None:
        """Run the compositions in order, then queue the prepared records (acknowledged by
        the batch's flush)."""
        for effect in prepared.compositions:
            await self.run(effect, origin)
        await self.send(prepared.outgoing)

    async def send(self, outgoing: list[Outgoing]) -> None:
        """Queue the prepared records in order (acknowledged by the batch's flush)."""
        done = self.send_now(outgoing)
        if done < len(outgoing):
            producer = self.producer
            for topic, value, key, headers in outgoing[done:]:
                await producer.send(topic, value, key, headers)
            self.emitted += len(outgoing) - done

    def send_now(self, outgoing: list[Outgoing]) -> int:
        """Queue the prepared records in order as far as that needs no waiting; how many
        were queued (the rest is for :meth:`send`)."""
        nowait = self.producer.send_nowait
        done = 0
        for topic, value, key, headers in outgoing:
            if nowait(topic, value, key, headers) is None:
                break
            done += 1
        self.emitted += done
        return done

    async def run_effects(self, effects: Effects, origin: Origin) -> None:
        """:meth:`prepare` then :meth:`finish`: all of a result, or nothing of its sends."""
        await self.finish(self.prepare(effects, origin), origin)

    # -- compositions --------------------------------------------------------------------

    async def run(self, effect: Effect, origin: Origin) -> Any:
        """Carry out ``effect`` completely and return its result."""
        if isinstance(effect, (Emit, Reply)):
            (fut,) = await self._send_now(effect, origin)
            return await fut
        if isinstance(effect, FanOut):
            return list(await asyncio.gather(*await self._send_now(effect, origin)))
        if isinstance(effect, Call):
            if self.tracing is not None:
                name = getattr(effect.fn, "__qualname__", type(effect.fn).__name__)
                with self.tracing.effect(f"call {name}"):
                    return await _call(effect)
            return await _call(effect)
        if isinstance(effect, Sequential):
            return [await self.run(e, origin) for e in effect.effects]
        if isinstance(effect, Parallel):
            return list(await asyncio.gather(*(self.run(e, origin) for e in effect.effects)))
        if isinstance(effect, Conditional):
            cond = effect.condition() if callable(effect.condition) else effect.condition
            branch = effect.then if cond else effect.otherwise
            return None if branch is None else await self.run(branch, origin)
        if isinstance(effect, Pipeline):
            result = await self.run(effect.first, origin)
            for step in effect.steps:
                nxt = step(result)
                if nxt is None:
                    break
                result = await self.run(nxt, origin)
            return result
        if isinstance(effect, Retry):
            return await self._retry(effect, origin)
        handler = self._handler(effect)
        if self.tracing is not None:  # a substrate's effect (an MCP call, ...)
            with self.tracing.effect(type(effect).__name__):
                return await handler(effect, origin, self)
        return await handler(effect, origin, self)

    def _handler(self, effect: Effect) -> EffectHandler:
        for cls in type(effect).__mro__:
            handler = self._handlers.get(cls)
            if handler is not None:
                return handler
        raise EffectError(
            f"no handler for effect {type(effect).__name__}: register one with "
            "topology.register_effect(...)"
        )

    async def emit(
        self,
        intent: Intent,
        origin: Origin,
        *,
        topic: str | None = None,
        key: str | None = None,
        sealed: bool = True,
    ) -> Delivery:
        """Send ``intent`` for a registered effect's handler and wait for the broker: checked
        as an emit (declared topic, not the engine's, fits), sealed as the engine's own unless
        ``sealed=False``."""
        if key is None:
            key = intent.partition_key()
        out = self._record(
            self._topic_for(intent, topic),
            intent,
            origin.context.inherit(origin.reactor),
            None if key is None else key.encode(),
            sealed,
        )
        ack = await self.producer.send(out.topic, out.value, out.key, out.headers)
        self.emitted += 1
        return await ack

    async def _retry(self, effect: Retry, origin: Origin) -> Any:
        delays = effect.delays()
        while True:
            try:
                return await self.run(effect.effect, origin)
            except effect.retry_on:
                delay = next(delays, None)
                if delay is None:
                    raise
                await self.clock.sleep(delay)

    async def _send_now(
        self, effect: Emit | Reply | FanOut, origin: Origin
    ) -> list[Awaitable[Delivery]]:
        records = self._records(effect, origin)
        futures = [await self.producer.send(o.topic, o.value, o.key, o.headers) for o in records]
        self.emitted += len(futures)
        return futures

    # -- checking and encoding -----------------------------------------------------------

    def _records(self, effect: Emit | Reply | FanOut, origin: Origin) -> list[Outgoing]:
        intent = effect.intent
        key: str | None = None
        if isinstance(effect, Emit):
            topics = [self._topic_for(intent, effect.topic)]
            key = effect.key
            context = effect.context or origin.context.inherit(origin.reactor)
        elif isinstance(effect, Reply):
            topics = [self._reply_topic(origin)]
            context = origin.context.inherit(origin.reactor)
            if context.deadline is not None:  # the request's, not the answer's: an answer
                # taken late is still the answer (and a refused one is not refused again)
                context = context.model_copy(update={"deadline": None})
        else:
            topics = [self._topic_for(intent, t) for t in effect.topics]
            key = effect.key
            context = origin.context.inherit(origin.reactor)
        if key is None:
            key = intent.partition_key()
        raw_key = None if key is None else key.encode()
        if isinstance(effect, Reply):  # keyed by whoever waits for it, else as the request
            requester = origin.context.requester
            raw_key = requester.encode() if requester else raw_key or origin.key
        # the engine's own intents are always sealed, and what vouched capabilities send
        sealed = isinstance(effect, Reply) or self._vouched(context)
        return [self._record(topic, intent, context, raw_key, sealed) for topic in topics]

    def _record(
        self, topic: str, intent: Intent, context: Context, key: bytes | None, sealed: bool
    ) -> Outgoing:
        value, headers = encode(intent, context)
        if self.tracing is not None:
            headers.append((TRACEPARENT, traceparent(context)))
        cls = type(intent)
        if sealed or cls.internal or context.reply_to in self._sealed_reply_targets:
            sealer = self.sealer
            if sealer is None:
                raise EffectError(
                    f"{cls.intent_type} is internal but this worker has no worker secret to "
                    "seal it (packetflow caps secret)"
                )
            context_raw = header(headers, CONTEXT_HEADER)
            authority = sealed_authority(headers)  # the seal covers the authority it carries
            headers.append(
                (
                    MAC_HEADER,
                    sealer.seal(
                        topic, key, cls.intent_type.encode(), value, context_raw, authority
                    ),
                )
            )
        size = record_bytes(key, value, headers)
        if size > self.limits.get(topic, BROKER_MAX_MESSAGE_BYTES):
            self._refuse_size(cls, topic, size)
        return Outgoing(topic, value, key, headers)

    def _refuse_size(self, cls: type[Intent], topic: str, size: int) -> NoReturn:
        limit = self.limits.get(topic, BROKER_MAX_MESSAGE_BYTES)
        raise EffectError(
            f"{cls.intent_type} for {topic} is {size} bytes, more than the topic takes "
            f"({limit}, max.message.bytes)",
            "output-too-large",
        )

    def _reply_topic(self, origin: Origin) -> str:
        reply_to = origin.context.reply_to
        if reply_to is None:
            raise EffectError(
                f"{origin.reactor} replied but the request's context has no reply_to"
            )
        if reply_to not in self._reply_targets:  # checked on the way in too
            raise EffectError(f"reply_to {reply_to!r} is not a reply topic", "bad-reply-to")
        return reply_to

    def _topic_for(self, intent: Intent, topic: str | None) -> str:
        return self._topic_for_type(type(intent), topic)

    def _topic_for_type(self, cls: type[Intent], topic: str | None = None) -> str:
        cached = self._topics.get((cls, topic))
        if cached is not None:
            return cached
        logical = topic or self.topology.topic_for(cls)
        if logical is None:
            raise EffectError(
                f"no topic for intent type {cls.intent_type!r}: pass topic= to emit "
                "or declare topology.route(...)"
            )
        physical = self.topology.physical(logical)
        if physical in self._internal:
            raise EffectError(
                f"{logical!r} is a topic the engine manages: no effect may write to it",
                "forbidden-topic",
            )
        if physical not in self._writable:
            raise EffectError(
                f"{logical!r} is not a topic of {self.topology.name!r}: declare it with "
                "topology.topic() or topology.route()",
                "forbidden-topic",
            )
        self._topics[(cls, topic)] = physical
        return physical


async def _call(effect: Call) -> Any:
    result = effect.fn(*effect.args)
    if inspect.isawaitable(result):
        result = await result
    return result
