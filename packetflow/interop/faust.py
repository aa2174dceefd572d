"""Faust apps and PacketFlow topologies exchanging intents on the same Kafka topics.

A Faust topic made by :func:`intent_topic` carries a topology's intents in PacketFlow's wire
format (value: the intent's JSON; headers: ``pf-type``, ``pf-version``, ``pf-context`` and
the sender's ``pf-token``), so a Faust agent can publish intents the topology's workers take
and check like any record (without a valid token they land on ``<topology>.denied``), and
read the topology's topics as typed intents with their context::

    orders = intent_topic(app, topology, PlaceOrder)
    await send_intent(orders, PlaceOrder(customer="c1", amount=30), token=token)

    @app.agent(intent_topic(app, topology, OrderAccepted))
    async def on_accepted(stream):
        async for event in stream.events():
            accepted, ctx = event.value, context_of(event)

The values are the topology's own pydantic intents, decoded by the workers' decoder with
their wire rules: one model per message, not a faust Record copy of it. The bridge is a
:class:`faust.Schema` rather than a faust codec because a codec sees only the value's bytes,
and the type and context travel in headers. A Faust consumer checks no token and no seal:
like any Faust app it trusts whoever may produce to the topic (Kafka's ACLs).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any, cast

from faust import Schema, Topic
from faust.exceptions import ValueDecodeError
from faust.types import AppT, EventT, HeadersArg, Message, RecordMetadata, TopicT
from faust.types.core import OpenHeadersArg

from packetflow.core.context import Context
from packetflow.core.intent import Intent, intent_types_of
from packetflow.engine.codec import (
    CAPABILITIES_HEADER,
    CONTENT_TYPE_HEADER,
    CONTEXT_HEADER,
    TOKEN_HEADER,
    TYPE_HEADER,
    VERSION_HEADER,
    Decoder,
    Rejected,
    authority_header,
    decode_context,
    encode_context,
    fixed_headers,
    header,
)
from packetflow.engine.ingress import holder_of
from packetflow.engine.topology import Topology, TopologyError
from packetflow.engine.transport import Headers, Record

__all__ = ["IntentSchema", "IntentTopic", "context_of", "intent_topic", "send_intent"]

log = logging.getLogger("packetflow.interop")

# what the schema writes itself for every intent (one of each, or a worker refuses the record)
_FIXED = frozenset({TYPE_HEADER, VERSION_HEADER, CONTENT_TYPE_HEADER})


class IntentSchema(Schema):
    """How a Faust topic reads and writes one of a topology's topics: keys are text, values
    intents of ``intent_types``, encoded and decoded exactly as PacketFlow's workers do."""

    def __init__(
        self, topology: Topology, topic: str, intent_types: tuple[type[Intent], ...]
    ) -> None:
        # informative only (this schema decodes values itself): faust types it as its models
        value_type = cast(Any, intent_types[0] if len(intent_types) == 1 else Intent)
        super().__init__(
            key_type=str, value_type=value_type, key_serializer="raw", value_serializer="raw"
        )
        self.topology = topology
        self.topic = topic
        self.intent_types = intent_types
        self.decoder = Decoder(
            {t.intent_type: t for t in intent_types},
            max_record_bytes=topology.max_record_bytes,
            default_type=topology.default_types.get(topic),
            unsigned_capabilities=topology.security.allow_unsigned,
        )

    def loads_value(
        self, app: AppT, message: Message, *, loads: Any = None, serializer: Any = None
    ) -> Intent:
        """The intent in ``message``; a record a worker would set aside raises faust's
        ``ValueDecodeError`` with the worker's reason (``unknown-type: ...``)."""
        try:
            return self.decoder.decode_record(_record(message)).intent
        except Rejected as exc:
            raise ValueDecodeError(f"{exc.reason}: {exc.message}") from None

    def dumps_value(
        self, app: AppT, value: Any, *, serializer: Any = None, headers: OpenHeadersArg
    ) -> tuple[Any, OpenHeadersArg]:
        """The intent's JSON, with ``pf-type``, ``pf-version`` and ``content-type`` added to
        ``headers`` and, when they hold none, the ``pf-context`` of a new root context."""
        if not isinstance(value, self.intent_types):
            names = ", ".join(t.intent_type for t in self.intent_types)
            raise TypeError(f"topic {self.topic!r} carries {names}, not {value!r}")
        if value.internal:
            raise TypeError(
                f"{value.intent_type} is internal: only workers emit it (sealed with the "
                "worker secret), a Faust app cannot"
            )
        kept = [(k, v) for k, v in _pairs(headers) if k not in _FIXED]
        if header(kept, CONTEXT_HEADER) is None:
            kept.append((CONTEXT_HEADER, encode_context(Context.new())))
        return value.model_dump_json().encode(), [*fixed_headers(type(value)), *kept]


class IntentTopic(Topic):
    """A faust Topic of intents on which a record the workers would set aside (malformed,
    of another type, not valid) is logged with its reason and skipped: it stays on Kafka,
    and the agent goes on (faust's default raises it in the agent, which crashes and is
    restarted)."""

    async def on_key_decode_error(self, exc: Exception, message: Message) -> None:
        _skipped(exc, message)

    async def on_value_decode_error(self, exc: Exception, message: Message) -> None:
        _skipped(exc, message)


def _skipped(exc: Exception, message: Message) -> None:
    log.warning(
        "skipped %s/%d/%d, which is not an intent of this topic: %s",
        message.topic, message.partition, message.offset, exc,
    )  # fmt: skip


def intent_topic(app: AppT, topology: Topology, intent_type: Any) -> IntentTopic:
    """A Faust topic for the topology's topic of ``intent_type`` (a class, or a union ``A |
    B`` of types sharing a topic): it sends and receives those intents in PacketFlow's wire
    format, on the topic's physical (namespaced) name.

    A topology's workers create its topics: start one before the Faust app, which subscribes
    only to topics that exist.
    """
    types = intent_types_of(intent_type)
    topics = {t: topology.topic_for(t) for t in types}
    for t, topic in topics.items():
        if topic is None:
            raise TopologyError(
                f"intent type {t.intent_type!r} has no topic in topology {topology.name!r}: "
                "route it (topology.route) or give it a reactor"
            )
    names = set(topics.values())
    if len(names) > 1:
        raise TopologyError(
            f"{' | '.join(t.intent_type for t in types)} travel on different topics "
            f"({', '.join(sorted(str(n) for n in names))}): make one intent_topic per topic"
        )
    name = cast(str, names.pop())
    return IntentTopic(
        app,
        topics=[topology.physical(name)],
        schema=IntentSchema(topology, name, types),
        partitions=topology.topics[name],
    )


async def send_intent(
    topic: TopicT, intent: Intent, *, context: Context | None = None, token: str | None = None
) -> Awaitable[RecordMetadata]:
    """Publish ``intent`` on ``topic`` (made by :func:`intent_topic`), keyed by its key field
    as PacketFlow keys it, with ``context`` (default: a new root context) and the signed
    capability ``token`` the workers check (default: the context's).

    Returns what ``topic.send`` does: await it for the broker's acknowledgement. Inside an
    agent the record goes out once the event being processed is acknowledged, as Faust's own
    sends do. To continue a trace an intent came with, pass
    ``context=context_of(event).inherit("my-agent")``.
    """
    if not isinstance(topic.schema, IntentSchema):
        raise TypeError(f"{topic!r} is not an intent topic: make it with intent_topic()")
    if context is None:
        context = Context.new(token=token)
    elif token is not None:  # the app's own token: the principal is its holder, as a
        # worker would name it (an inherited context names whoever sent upstream)
        context = Context.model_validate(
            {**context.model_dump(), "token": token, "principal": holder_of(token),
             "capabilities": ()}
        )  # fmt: skip
    headers = [(CONTEXT_HEADER, encode_context(context))]
    authority = authority_header(context)
    if authority is not None:
        headers.append(authority)
    return await topic.send(key=intent.partition_key(), value=intent, headers=headers)


def context_of(event: EventT) -> Context:
    """The PacketFlow context ``event`` (from an intent topic) came with: ids, trace,
    principal, deadline, baggage and its token, as sent (unverified)."""
    headers = _pairs(event.message.headers)
    raw = header(headers, CONTEXT_HEADER)
    if raw is None:
        raise ValueError(f"the event has no {CONTEXT_HEADER} header: not a PacketFlow record")
    return decode_context(raw, header(headers, CAPABILITIES_HEADER), header(headers, TOKEN_HEADER))


def _pairs(headers: HeadersArg | None) -> list[tuple[str, bytes]]:
    """Faust's headers (a mapping or a sequence of pairs) as PacketFlow's: ``(str, bytes)``."""
    if not headers:
        return []
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(k, v.encode() if isinstance(v, str) else v) for k, v in items]


def _record(message: Message) -> Record:
    headers: Headers = _pairs(message.headers)
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        headers=headers,
        timestamp=int(message.timestamp * 1000),
    )
