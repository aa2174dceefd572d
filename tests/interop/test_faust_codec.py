"""The Faust bridge's codec without a broker: what a Faust app sends through it is the record
a worker decodes (context and token included), what a worker writes a Faust topic reads as
the intent and its context, and what cannot cross is refused with the workers' reasons."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.exceptions import ValueDecodeError
from faust.types import TP, Message, RecordMetadata

from packetflow import Context, Intent, KeyPair, Topology, TopologyError, issue_token
from packetflow.core.tokens import decode_token
from packetflow.engine.codec import Decoder, encode, header
from packetflow.engine.transport import Record
from packetflow.interop.faust import context_of, intent_topic, send_intent

TOKEN = issue_token("legacy", ["clerk:customer/*"], key=KeyPair.generate())


class PlaceOrder(
    Intent, type_name="unit.PlaceOrder", key="customer", requires=["order:customer/{customer}"]
):
    customer: str
    amount: int


class Cancel(
    Intent, type_name="unit.Cancel", key="customer", requires=["order:customer/{customer}"]
):
    customer: str


class Accepted(Intent, type_name="unit.Accepted", key="customer"):
    customer: str
    total: int


class Ledger(Intent, type_name="unit.Ledger", key="customer", internal=True):
    customer: str


class Unrouted(Intent, type_name="unit.Unrouted"):
    note: str


def shop() -> Topology:
    topology = Topology("unit", namespace="ns", capabilities={"clerk": ["order"]})

    @topology.reactor(PlaceOrder | Cancel, topic="orders")
    def handle(intent: PlaceOrder | Cancel, ctx: Context) -> list[Intent]:
        return []

    topology.route(Accepted, "accepted")
    topology.route(Ledger, "ledger")
    return topology


class Producer:
    """Stands in for faust's Kafka producer: keeps what faust hands it to send."""

    def __init__(self) -> None:
        self.sent: list[Record] = []

    async def maybe_start(self) -> None:
        return None

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, **kw: Any
    ) -> asyncio.Future[RecordMetadata]:
        headers: Sequence[tuple[str, bytes]] = kw.get("headers") or []
        offset = len(self.sent)
        self.sent.append(Record(topic, 0, offset, key, value, list(headers), 0))
        done: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        done.set_result(RecordMetadata(topic, 0, TP(topic, 0), offset))
        return done


@pytest.fixture
async def app(tmp_path: Path) -> faust.App:
    app = faust.App(
        f"unit-{uuid.uuid4().hex[:8]}",
        broker="kafka://127.0.0.1:9",  # never reached: the producer below stands in
        web_enabled=False,
        datadir=str(tmp_path),
    )
    app.producer = Producer()  # type: ignore[assignment]
    return app


def sent(app: faust.App) -> list[Record]:
    return app.producer.sent  # type: ignore[attr-defined, no-any-return]


def message(topic: str, value: bytes | None, headers: Sequence[tuple[str, bytes]]) -> Message:
    return Message(
        topic=topic, partition=1, offset=7, timestamp=time.time(), timestamp_type=0,
        headers=tuple(headers), key=b"c1", value=value, checksum=None,
    )  # fmt: skip


async def test_what_faust_sends_a_worker_decodes_with_its_context_and_token(
    app: faust.App,
) -> None:
    topology = shop()
    orders = intent_topic(app, topology, PlaceOrder | Cancel)
    context = Context.new(
        deadline=datetime.now(UTC) + timedelta(minutes=5), baggage={"from": "faust"}
    )
    await (await send_intent(orders, PlaceOrder(customer="c1", amount=30), context=context))
    await (await send_intent(orders, Cancel(customer="c2"), context=context, token=TOKEN))

    first, second = sent(app)
    assert (first.topic, first.key, second.key) == ("ns.orders", b"c1", b"c2")
    assert sorted(name for name, _ in second.headers) == sorted(
        ["pf-type", "pf-version", "content-type", "pf-context", "pf-token"]
    )
    assert header(first.headers, "pf-token") is None  # the context held no token
    decoder = Decoder(topology.intent_types, unsigned_capabilities=False)
    intent, decoded = decoder.decode(first)
    assert intent == PlaceOrder(customer="c1", amount=30)
    assert decoded.model_dump() == context.model_dump()
    intent, decoded = decoder.decode(second)
    assert intent == Cancel(customer="c2")
    holder = decode_token(TOKEN).holder  # the app's token: the principal is its holder
    assert decoded.model_dump() == {**context.model_dump(), "token": TOKEN, "principal": holder}
    # a context inherited from upstream names its sender: the app's token names the app
    upstream = Context.new(principal="ann").inherit("legacy-agent")
    await (await send_intent(orders, Cancel(customer="c3"), context=upstream, token=TOKEN))
    _, decoded = decoder.decode(sent(app)[-1])
    assert decoded.principal == holder and decoded.trace_id == upstream.trace_id


async def test_what_a_worker_writes_faust_reads_as_the_intent_and_its_context(
    app: faust.App,
) -> None:
    orders = intent_topic(app, shop(), PlaceOrder | Cancel)
    context = Context.new(principal="alice", token=TOKEN).inherit("place_order")
    value, headers = encode(Cancel(customer="c1"), context)  # as a worker writes it

    event = await orders.decode(message("ns.orders", value, headers), propagate=True)

    assert (event.key, event.value) == ("c1", Cancel(customer="c1"))
    assert context_of(event).model_dump() == context.model_dump()


async def test_a_plain_faust_send_writes_a_record_a_worker_takes(app: faust.App) -> None:
    accepted = intent_topic(app, shop(), Accepted)
    extra = {"pf-type": b"unit.Forged", "x-legacy": b"1"}

    await (await accepted.send(key="c1", value=Accepted(customer="c1", total=3), headers=extra))

    [record] = sent(app)
    assert [name for name, _ in record.headers].count("pf-type") == 1
    assert header(record.headers, "pf-type") == b"unit.Accepted"
    assert header(record.headers, "x-legacy") == b"1"
    assert header(record.headers, "pf-token") is None
    intent, context = Decoder(shop().intent_types).decode(record)  # a new root context
    assert intent == Accepted(customer="c1", total=3)
    assert context.trace_id and context.causation_id is None and context.trace == ()


GOOD = PlaceOrder(customer="c1", amount=3).model_dump_json().encode()


@pytest.mark.parametrize(
    ("value", "replace", "reason"),
    [
        (GOOD, {"pf-type": b"unit.Accepted"}, "unknown-type"),
        (b'{"customer": "c1", "amount": ', {}, "decode"),
        (b'{"customer": "c1", "amount": "x"}', {}, "validation"),
        (GOOD, {"pf-version": b"9"}, "schema-version"),
        (GOOD, {"pf-context": b'{"deadline": "2030-01-01T00:00:00"}'}, "bad-context"),
        (None, {}, "empty"),
    ],
)
async def test_what_a_worker_would_set_aside_is_a_faust_decode_error(
    app: faust.App, value: bytes | None, replace: dict[str, bytes], reason: str
) -> None:
    orders = intent_topic(app, shop(), PlaceOrder | Cancel)
    _, headers = encode(PlaceOrder(customer="c1", amount=3), Context.new())
    headers = [(k, replace.get(k, v)) for k, v in headers]

    with pytest.raises(ValueDecodeError, match=f"^{reason}: "):
        await orders.decode(message("ns.orders", value, headers), propagate=True)


async def test_a_record_with_two_tokens_is_refused_like_a_worker_does(app: faust.App) -> None:
    orders = intent_topic(app, shop(), PlaceOrder)
    value, headers = encode(PlaceOrder(customer="c1", amount=3), Context.new(token=TOKEN))

    with pytest.raises(ValueDecodeError, match=r"^malformed-headers: "):
        await orders.decode(
            message("ns.orders", value, [*headers, ("pf-token", b"x")]), propagate=True
        )


async def test_an_agent_skips_an_undecodable_record_and_logs_why(
    app: faust.App, caplog: pytest.LogCaptureFixture
) -> None:
    orders = intent_topic(app, shop(), PlaceOrder)
    _, headers = encode(PlaceOrder(customer="c1", amount=3), Context.new())

    with caplog.at_level(logging.WARNING, logger="packetflow.interop"):
        # what faust's conductor does for a record its topic cannot decode
        await orders.on_value_decode_error(ValueDecodeError("decode: bad"), message(
            "ns.orders", b"{", headers
        ))  # fmt: skip

    assert "skipped ns.orders/1/7" in caplog.text and "decode: bad" in caplog.text
    assert orders.queue.empty()  # nothing thrown at the agent reading it


async def test_what_cannot_cross_is_refused_with_why(app: faust.App) -> None:
    topology = shop()
    with pytest.raises(TopologyError, match=r"'unit\.Unrouted' has no topic"):
        intent_topic(app, topology, Unrouted)
    with pytest.raises(TopologyError, match="travel on different topics"):
        intent_topic(app, topology, PlaceOrder | Accepted)
    orders = intent_topic(app, topology, PlaceOrder)
    with pytest.raises(TypeError, match=r"carries unit\.PlaceOrder, not"):
        await send_intent(orders, Accepted(customer="c1", total=1))
    with pytest.raises(TypeError, match="internal: only workers emit it"):
        await send_intent(intent_topic(app, topology, Ledger), Ledger(customer="c1"))
    plain = app.topic("plain", value_serializer="raw")
    with pytest.raises(TypeError, match="not an intent topic"):
        await send_intent(plain, PlaceOrder(customer="c1", amount=1))
    with pytest.raises(ValueError, match="base64url"):
        await send_intent(orders, PlaceOrder(customer="c1", amount=1), token="not a token")
    event = await plain.decode(message("plain", b"{}", []), propagate=True)
    with pytest.raises(ValueError, match="no pf-context header: not a PacketFlow record"):
        context_of(event)
    assert sent(app) == []
