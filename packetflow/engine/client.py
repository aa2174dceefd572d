"""Client: publish intents to a topology's topics and read topics back, without running reactors."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from packetflow.core.context import Context
from packetflow.core.effects import Delivery
from packetflow.core.intent import Intent
from packetflow.core.replies import Refused
from packetflow.core.tokens import decode_token
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTEXT_HEADER,
    TOKEN_HEADER,
    TYPE_HEADER,
    Rejected,
    decode_context,
    encode,
    encode_key,
    header,
)
from packetflow.engine.replay import KINDS, ReplayPlan, ReplaySelection, plan_replay
from packetflow.engine.runtime.lifecycle import Lifecycle
from packetflow.engine.runtime.replies import ReplyWaiter
from packetflow.engine.security import Auditor, revocation_record
from packetflow.engine.setaside import SetAside
from packetflow.engine.topology import Topology, TopologyError
from packetflow.engine.transport import (
    BEGINNING,
    Producer,
    Record,
    StartAt,
    Transport,
    open_transport,
)


@dataclass(frozen=True)
class Received:
    """A record read back from a topic, decoded where its type is known."""

    record: Record
    intent: Intent | None
    context: Context | None

    def header(self, name: str) -> str | None:
        raw = header(self.record.headers, name)
        return None if raw is None else raw.decode(errors="replace")

    @property
    def set_aside(self) -> SetAside | None:
        """Why and from where the engine set this record aside (None: it did not)."""
        return SetAside.of(self.record)


class RequestRefused(Exception):
    """The engine set a request aside instead of answering it (denied, dead-lettered)."""

    def __init__(self, refused: Refused) -> None:
        super().__init__(f"{refused.reason}: {refused.error}")
        self.reason = refused.reason
        self.error = refused.error
        self.source = refused.source


class AskTimeout(TimeoutError):
    """No reply (and no refusal) came within the time asked for."""


class Client(Lifecycle):
    """A producer (and reader) bound to one topology's topic names and intent types.

    ``requester`` names this client when it asks (:meth:`ask`): replies are keyed by it, and
    it reads only its partition of the reply topic (default: a new random name).
    """

    def __init__(
        self, broker: str | Transport, topology: Topology, *, requester: str | None = None
    ) -> None:
        super().__init__()
        self.topology = topology
        self.transport = broker if isinstance(broker, Transport) else open_transport(broker)
        self.requester = requester or f"client-{uuid.uuid4().hex[:12]}"
        self._producer: Producer | None = None
        self._replies: ReplyWaiter | None = None

    async def _open(self, resources: contextlib.AsyncExitStack) -> None:
        await self.transport.start()
        resources.push_async_callback(self.transport.stop)
        await self.transport.ensure_topics(self.topology.topic_specs())
        producer = self.transport.producer()
        producer.key_groups = self.topology.key_groups()
        await producer.start()
        resources.push_async_callback(producer.stop)
        self._producer = producer

    async def send(
        self,
        intent: Intent,
        *,
        context: Context | None = None,
        topic: str | None = None,
        key: str | None = None,
    ) -> Delivery:
        """Publish ``intent`` and wait for the broker's acknowledgement."""
        return await (await self.enqueue(intent, context=context, topic=topic, key=key))

    async def enqueue(
        self,
        intent: Intent,
        *,
        context: Context | None = None,
        topic: str | None = None,
        key: str | None = None,
    ) -> Awaitable[Delivery]:
        """Queue ``intent``; await the result for its delivery once acknowledged."""
        if self._producer is None:
            raise RuntimeError("client not started: use 'async with Client(...)'")
        logical = topic or self.topology.topic_for(type(intent))
        if logical is None:
            raise TopologyError(
                f"no topic for intent type {type(intent).intent_type!r} in topology "
                f"{self.topology.name!r}: pass topic="
            )
        value, headers = encode(intent, context or Context.new())
        raw_key = encode_key(key if key is not None else intent.partition_key())
        return await self._producer.send(self.topology.physical(logical), value, raw_key, headers)

    async def ask(
        self,
        intent: Intent,
        *,
        context: Context | None = None,
        timeout: float = 10.0,
        topic: str | None = None,
        key: str | None = None,
    ) -> Intent:
        """Send ``intent`` as a request and return its reply: what its reactor answered
        with ``reply(...)`` (a type the topology knows: name it in the reactor's ``emits=``).

        Raises :class:`RequestRefused` at once when the engine set the request aside
        (denied or dead-lettered: why), :class:`AskTimeout` when neither came within
        ``timeout`` seconds (also the request's deadline, unless its context has one)."""
        waiter = await self._waiter()
        context = context or Context.new()
        context = context.model_copy(
            update={
                "reply_to": waiter.topic,
                "requester": self.requester,
                "deadline": context.deadline
                or datetime.now(UTC) + timedelta(seconds=timeout),
            }
        )
        future = waiter.expect(context.intent_id)
        try:
            await self.send(intent, context=context, topic=topic, key=key)
            try:
                reply = await asyncio.wait_for(future, timeout)
            except TimeoutError:
                raise AskTimeout(
                    f"no reply to {type(intent).intent_type} within {timeout:g}s"
                ) from None
        finally:
            waiter.forget(context.intent_id)
        if isinstance(reply.intent, Refused):
            raise RequestRefused(reply.intent)
        return reply.intent

    async def _waiter(self) -> ReplyWaiter:
        if self._replies is None:
            topology = self.topology
            waiter = ReplyWaiter(
                self.transport,
                topology.physical(topology.replies_topic),
                self.requester,
                topology.known_types,
                topology.security.sealer(in_process=self.transport.in_process),
            )
            await waiter.start()
            self._resources.push_async_callback(waiter.stop)
            self._replies = waiter
        return self._replies

    async def send_many(self, items: Iterable[tuple[Intent, Context | None]]) -> list[Delivery]:
        """Publish many intents, pipelined, and wait for all acknowledgements."""
        acks = [await self.enqueue(intent, context=ctx) for intent, ctx in items]
        return [await ack for ack in acks]

    async def send_raw(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
    ) -> Delivery:
        """Publish bytes as they are (for tools, bridges and tests of bad input)."""
        if self._producer is None:
            raise RuntimeError("client not started: use 'async with Client(...)'")
        ack = await self._producer.send(self.topology.physical(topic), value, key, list(headers))
        return await ack

    # -- capability tokens -----------------------------------------------------------------

    async def revoke(
        self,
        *,
        token_id: str | None = None,
        holder: str | None = None,
        by: str | None = None,
        reason: str = "",
        at: float | None = None,
    ) -> Delivery:
        """Revoke a token id (for good) or a holder (every token issued to it until now).

        Written to the compacted revocations topic that every worker follows, and audited.
        """
        at = time.time() if at is None else at
        key, value = revocation_record(
            token_id=token_id, holder=holder, by=by, reason=reason, at=at
        )
        delivery = await self.send_raw(self.topology.revocations_topic, value, key=key)
        kind = "token" if token_id is not None else "holder"
        await self.auditor.record(
            "revoked",
            at,
            key=holder or by,
            kind=kind,
            token_id=token_id,
            holder=holder,
            by=by,
            reason=reason or None,
        )
        return delivery

    async def record_issued(
        self, token: str, *, by: str | None = None, at: float | None = None
    ) -> None:
        """Write an ``issued`` (or ``delegated``) event for ``token`` to the audit topic."""
        await self.auditor.issued(token, by=by, at=time.time() if at is None else at)

    @property
    def auditor(self) -> Auditor:
        """Writes this topology's audit records (issues, revocations) through this client."""
        topic = self.topology.audit_topic
        return Auditor(
            self.topology.name, lambda value, key: self.send_raw(topic, value, key=key)
        )

    async def read_audit(self) -> list[dict[str, Any]]:
        """Every event on the audit topic so far, oldest first (records that are not audit
        events, which anyone who can produce may write there, are left out)."""
        out = []
        for r in await self.read(self.topology.audit_topic):
            try:
                event = orjson.loads(r.record.value or b"")
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict) and isinstance(event.get("at"), int | float):
                out.append(event)
        return sorted(out, key=lambda e: e["at"])

    def decode(self, record: Record) -> Received:
        """``record`` decoded where its type is one of the topology's (never raises)."""
        return decode_loosely(record, self.topology.known_types)

    async def read(self, topic: str) -> list[Received]:
        """Every record on ``topic`` (logical name) so far, decoded where possible."""
        records: list[Record] = []
        await self.transport.read_topic(self.topology.physical(topic), records.append)
        types = self.topology.known_types
        out = []
        for record in records:
            out.append(decode_loosely(record, types))
        return out

    async def wait_for(self, topic: str, count: int, timeout: float = 30.0) -> list[Received]:
        """Read ``topic`` until it holds at least ``count`` records, or fail after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            received = await self.read(topic)
            if len(received) >= count:
                return received
            if loop.time() > deadline:
                raise TimeoutError(f"{topic}: {len(received)} of {count} records after {timeout}s")
            await asyncio.sleep(0.1)


    # -- operating what flows and what was set aside ---------------------------------------

    def set_aside_topic(self, kind: str) -> str:
        """The logical name of set-aside topic ``kind`` (dead-letters, denied, late, drops)."""
        topics = dict(zip(KINDS, self.topology.names.set_aside, strict=True))
        if kind not in topics:
            raise ValueError(f"no set-aside topic {kind!r}: one of {', '.join(topics)}")
        return topics[kind]

    async def tail(
        self,
        topic: str,
        *,
        start: StartAt = BEGINNING,
        follow: bool = False,
        key: str | None = None,
        intent_type: str | None = None,
        poll: float = 0.5,
    ) -> AsyncIterator[Received]:
        """The records of ``topic`` (logical name) from ``start``, decoded where possible:
        up to its end as of now, or (``follow``) as they arrive until the caller stops.
        ``key`` and ``intent_type`` keep only the records with that key or ``pf-type``."""
        physical = self.topology.physical(topic)
        follower = self.transport.follow(
            physical, await self.transport.partitions_for(physical), start=start
        )
        wanted_key = None if key is None else key.encode()
        wanted_type = None if intent_type is None else intent_type.encode()
        types = self.topology.known_types

        def chosen(record: Record) -> bool:
            if wanted_key is not None and record.key != wanted_key:
                return False
            return wanted_type is None or header(record.headers, TYPE_HEADER) == wanted_type

        try:
            await follower.start()
            records = await follower.catch_up()
            records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
            while True:
                for record in records:
                    if chosen(record):
                        yield decode_loosely(record, types)
                if not follow:
                    return
                records = await follower.poll(poll)
        finally:
            await follower.stop()

    async def replay(
        self,
        kind: str = "dead-letters",
        selection: ReplaySelection | None = None,
        *,
        token: str | None = None,
        by: str | None = None,
        dry_run: bool = False,
        again: bool = False,
        force: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> ReplayReport:
        """Publish set-aside records of ``kind`` again to the topics they came from (see
        :mod:`packetflow.engine.replay`), each audited as ``replayed`` by ``by`` (default:
        the holder of ``token``). ``dry_run``: say what would be replayed, publish nothing."""
        topic = self.set_aside_topic(kind)
        producer = self._producer
        if producer is None:
            raise RuntimeError("client not started: use 'async with Client(...)'")
        records: list[Record] = []
        await self.transport.read_topic(self.topology.physical(topic), records.append)
        replayed = set() if again else {
            str(e.get("source")) for e in await self.read_audit() if e.get("event") == "replayed"
        }
        claims = decode_token(token) if token is not None else None
        principal = claims.holder if claims else None
        internal = self.topology.internal_topics()
        sources = {
            self.topology.physical(t) for t in self.topology.source_topics() if t not in internal
        }
        plan = plan_replay(
            records, kind=kind, selection=selection or ReplaySelection(), sources=sources,
            replayed=replayed, token=token, principal=principal, again=again, force=force,
        )
        report = ReplayReport(plan, dry_run=dry_run)
        if dry_run:
            return report
        operator = by or principal
        token_id = claims.token_id if claims else None
        for done, item in enumerate(plan.chosen, 1):
            ack = await producer.send(item.topic, item.value, item.key, item.headers)
            delivery = await ack
            report.published.append(delivery)
            await self.auditor.record(
                "replayed", time.time(), key=operator, by=operator, token_id=token_id,
                reason=item.reason, copy=item.copy, source=item.source,
                to=f"{delivery.topic}/{delivery.partition}/{delivery.offset}",
            )
            if progress is not None:
                progress(done, len(plan.chosen))
        return report


@dataclass
class ReplayReport:
    """What :meth:`Client.replay` published (``published``, in order) and what it left."""

    plan: ReplayPlan
    dry_run: bool = False
    published: list[Delivery] = field(default_factory=list)


def decode_loosely(record: Record, types: dict[str, type[Intent]]) -> Received:
    """``record`` decoded where its type is one of ``types`` and it parses (else as it is)."""
    raw_type = header(record.headers, TYPE_HEADER)
    raw_ctx = header(record.headers, CONTEXT_HEADER)
    intent = context = None
    try:
        if raw_ctx:
            context = decode_context(
                raw_ctx,
                header(record.headers, CAPABILITIES_HEADER),
                header(record.headers, TOKEN_HEADER),
            )
        cls = types.get(raw_type.decode()) if raw_type else None
        if cls is not None and record.value is not None:
            intent = cls.model_validate_json(record.value)
    except (ValueError, Rejected):
        pass  # left undecoded: the caller still has the record
    return Received(record, intent, context)
