"""Runs effects: turns the data a reactor returned into sends, calls, waits and retries.

Plain emits at the top level of a reactor's result take the fast path: they are queued on
the producer and their acknowledgements awaited once per batch, before offsets are
committed. Compositions (sequential, parallel, pipeline, retry, ...) are awaited in place
with their real semantics, so a ``Sequential`` only starts its second step once the broker
acknowledged the first.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, NamedTuple

from packetflow.core.context import Context
from packetflow.core.effects import (
    Call,
    Conditional,
    Delivery,
    Effect,
    Emit,
    FanOut,
    Parallel,
    Pipeline,
    Reply,
    Retry,
    Sequential,
)
from packetflow.core.intent import Intent
from packetflow.engine.clock import Clock
from packetflow.engine.codec import encode, encode_key
from packetflow.engine.transport import Producer

if TYPE_CHECKING:
    from packetflow.engine.topology import Topology


class EffectError(RuntimeError):
    """An effect that cannot be carried out as written (no topic, no reply_to, ...)."""


class Origin(NamedTuple):
    """The reactor run that produced an effect: its name, context and record key."""

    reactor: str
    context: Context
    key: bytes | None


class Interpreter:
    def __init__(self, topology: Topology, producer: Producer, clock: Clock) -> None:
        self.topology = topology
        self.producer = producer
        self.clock = clock
        self.emitted = 0
        self._topics: dict[tuple[type[Intent], str | None], str] = {}

    async def start(self, effects: list[Effect], origin: Origin) -> None:
        """Carry out a reactor's top-level effects (plain emits are acknowledged per batch)."""
        for effect in effects:
            if type(effect) is Emit and effect.context is None:  # the common case, kept short
                intent = effect.intent
                value, headers = encode(intent, origin.context.inherit(origin.reactor))
                key = effect.key if effect.key is not None else intent.partition_key()
                await self.producer.send(
                    self._topic_for(intent, effect.topic),
                    value,
                    None if key is None else key.encode(),
                    headers,
                )  # acknowledged by the batch's flush
                self.emitted += 1
            elif isinstance(effect, (Emit, Reply, FanOut)):
                await self._send(effect, origin)
            else:
                await self.run(effect, origin)

    async def run(self, effect: Effect, origin: Origin) -> Any:
        """Carry out ``effect`` completely and return its result."""
        if isinstance(effect, (Emit, Reply)):
            (fut,) = await self._send(effect, origin)
            return await fut
        if isinstance(effect, FanOut):
            return list(await asyncio.gather(*await self._send(effect, origin)))
        if isinstance(effect, Call):
            result = effect.fn(*effect.args)
            if inspect.isawaitable(result):
                result = await result
            return result
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
        raise EffectError(f"not an effect: {effect!r}")

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

    async def _send(
        self, effect: Emit | Reply | FanOut, origin: Origin
    ) -> list[Awaitable[Delivery]]:
        intent = effect.intent
        if isinstance(effect, Emit):
            topics = [self._topic_for(intent, effect.topic)]
            key = effect.key
            context = effect.context or origin.context.inherit(origin.reactor)
        elif isinstance(effect, Reply):
            reply_to = origin.context.reply_to
            if reply_to is None:
                raise EffectError(
                    f"{origin.reactor} replied but the request's context has no reply_to"
                )
            topics = [reply_to]  # already a physical name: the requester chose it
            key = None
            context = origin.context.inherit(origin.reactor)
        else:
            topics = [self._topic_for(intent, t) for t in effect.topics]
            key = effect.key
            context = origin.context.inherit(origin.reactor)
        value, headers = encode(intent, context)
        raw_key = encode_key(key if key is not None else intent.partition_key())
        if raw_key is None and isinstance(effect, Reply):
            raw_key = origin.key
        futures = [await self.producer.send(topic, value, raw_key, headers) for topic in topics]
        self.emitted += len(futures)
        return futures

    def _topic_for(self, intent: Intent, topic: str | None) -> str:
        cached = self._topics.get((type(intent), topic))
        if cached is not None:
            return cached
        logical = topic or self.topology.topic_for(type(intent))
        if logical is None:
            raise EffectError(
                f"no topic for intent type {type(intent).intent_type!r}: pass topic= to emit "
                "or declare topology.route(...)"
            )
        physical = self._topics[(type(intent), topic)] = self.topology.physical(logical)
        return physical
