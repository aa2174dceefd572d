"""The Faust bridge on real Kafka: ``topologies.faust_bridge``'s Faust app, run in this
process, publishes legacy orders as intents that a PacketFlow worker takes with the app's
token, and reads what the reactor emits as typed intents with their context, back into
legacy records; intents it publishes without a valid token are denied."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from support.running import Running, running, unique

from packetflow import KeyPair, KeyStore, issue_token
from packetflow.interop.faust import send_intent

pytestmark = pytest.mark.kafka

WAIT = 20.0  # upper bound of every wait; a passing test returns long before
MODULE = "topologies.faust_bridge"


@dataclass
class Bridge:
    module: ModuleType  # topologies.faust_bridge, imported in this test's namespace
    pf: Running  # a PacketFlow worker of its topology, and a client
    bootstrap: str


@pytest.fixture
async def bridge(
    kafka_url: str, kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Bridge]:
    """The example's two sides on the session's broker, in a namespace of their own, with a
    signing key the worker trusts and the Faust app's token issued by it."""
    keys = KeyStore(tmp_path / "keys")
    key = keys.generate()
    keys.write_secret()
    monkeypatch.setenv("PACKETFLOW_KEYS", str(keys.path))
    monkeypatch.setenv("PACKETFLOW_NAMESPACE", unique("faustbridge"))
    monkeypatch.setenv("PACKETFLOW_BROKER", kafka_url)
    monkeypatch.setenv("APP_DATADIR", str(tmp_path / "faust"))  # faust's data directory
    monkeypatch.setenv("BRIDGE_TOKEN", issue_token("legacy-shop", ["clerk:customer/*"], key=key))
    sys.modules.pop(MODULE, None)  # its topology and app read the environment above
    module = importlib.import_module(MODULE)
    try:
        async with running(module.topology, kafka_url) as pf:  # the worker creates the topics
            await asyncio.wait_for(module.app.start(), WAIT)
            try:
                yield Bridge(module, pf, kafka_bootstrap)
            finally:
                await asyncio.wait_for(module.app.stop(), WAIT)
    finally:
        sys.modules.pop(MODULE, None)


async def legacy_order(bridge: Bridge, order_id: str, customer: str, amount: int) -> None:
    """A legacy order on the Faust app's own topic, sent the Faust way, acknowledged."""
    m = bridge.module
    order = m.LegacyOrder(order_id=order_id, customer=customer, amount=amount)
    await (await m.legacy_orders.send(key=customer, value=order))


async def garbage(bridge: Bridge, topic: str, key: str) -> None:
    """A record that is no intent, produced to ``topic`` by someone else than a worker."""
    producer = AIOKafkaProducer(bootstrap_servers=bridge.bootstrap)
    await producer.start()
    try:  # keyed as a worker keys it: on the partition where that key's intents follow
        await producer.send_and_wait(topic, b"{not an intent", key=key.encode())
    finally:
        await producer.stop()


async def confirmations(bridge: Bridge, customer: str, count: int) -> list[dict[str, Any]]:
    """The first ``count`` legacy confirmations for ``customer``, read straight from Kafka."""
    topic = bridge.module.confirmations.get_topic_name()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bridge.bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + WAIT
        while len(found) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                values = (json.loads(r.value) for r in records if r.value)
                found.extend(v for v in values if v["customer"] == customer)
    finally:
        await consumer.stop()
    assert len(found) >= count, f"{len(found)} of {count} confirmations within {WAIT} s"
    return found[:count]


async def test_orders_go_from_faust_through_a_reactor_and_back_with_their_context(
    bridge: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    customer = unique("c")
    # the agent reading the reactor's output skips (and logs) what is not an intent there
    await garbage(bridge, bridge.module.accepted_orders.get_topic_name(), customer)
    await legacy_order(bridge, "o1", customer, 30)
    await legacy_order(bridge, "o2", customer, 12)

    confirmed = await confirmations(bridge, customer, 2)
    assert [(c["order_id"], c["total_spent"]) for c in confirmed] == [("o1", 30), ("o2", 42)]
    assert bridge.pf.state("place_order", customer) == 42
    assert "missing-type: record has no pf-type header" in caplog.text
    assert "Crashed" not in caplog.text  # the agent went on, never restarted

    # what the Faust app published, as the workers read it: its own context and token
    published = {
        r.intent.order_id: r
        for r in await bridge.pf.client.read("orders")
        if r.intent is not None and r.intent.customer == customer
    }
    assert set(published) == {"o1", "o2"}
    assert published["o1"].context is not None and published["o2"].context is not None
    assert published["o1"].context.trace_id != published["o2"].context.trace_id
    for c in confirmed:  # the trace and the cause came back to Faust through the reactor
        sent = published[c["order_id"]].context
        assert sent is not None
        assert (c["trace_id"], c["caused_by"]) == (sent.trace_id, sent.intent_id)
    emitted = [r for r in await bridge.pf.client.read("accepted") if r.intent is not None]
    principals = {r.context.principal for r in emitted if r.intent.customer == customer}
    assert principals == {"legacy-shop"}  # the token's holder, verified by the worker


async def test_intents_from_faust_without_a_valid_token_are_denied(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = bridge.module
    monkeypatch.delenv("BRIDGE_TOKEN")  # the agent forwards this order without a token
    await legacy_order(bridge, "o3", "c-tokenless", 5)
    forged = issue_token("legacy-shop", ["clerk:customer/*"], key=KeyPair.generate())
    order = m.PlaceOrder(order_id="o4", customer="c-forged", amount=7)
    await (await send_intent(m.orders, order, token=forged))  # signed by a key nobody trusts

    denied = await bridge.pf.denied(2)
    reasons = {r.intent.customer: (r.header("pf-reason"), r.header("pf-missing")) for r in denied}
    assert reasons == {
        "c-tokenless": ("insufficient", "order:customer/c-tokenless"),
        "c-forged": ("unknown-key", None),
    }
    assert bridge.pf.state("place_order", "c-tokenless") is None
    assert bridge.pf.state("place_order", "c-forged") is None
    assert await bridge.pf.client.read("accepted") == []
