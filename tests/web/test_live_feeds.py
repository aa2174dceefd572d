"""Live feeds over SSE and WebSocket, on every transport: events in order with
topic/partition/offset ids, only what the token may read, resuming with Last-Event-ID with
nothing lost or repeated, and a slow subscriber dropped with its reason."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
import websockets
from support.running import WAIT
from support.webshop import KEY, bearer, served, shop

from packetflow import Capability, issue_token
from packetflow.engine.transport.memory import MemoryTransport
from packetflow.web import live

ALICE = issue_token("alice", ["order:customer/alice"], key=KEY, ttl=3600)
BOB = issue_token("bob", ["order:customer/bob"], key=KEY, ttl=3600)
READ_ALL = issue_token("ops", ["read:customer/*"], key=KEY, ttl=3600)
READ_ALICE = issue_token("alice", ["read:customer/alice"], key=KEY, ttl=3600)


async def sse(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The events of a text/event-stream response, as {field: value}."""
    event: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if event:
                yield event
            event = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        event[name] = value.removeprefix(" ")


async def take(response: httpx.Response, count: int) -> list[dict[str, str]]:
    out = []
    async with asyncio.timeout(WAIT):
        async for event in sse(response):
            if event.get("event") == "intent":
                out.append(event)
                if len(out) == count:
                    return out
    raise AssertionError(f"the stream ended after {len(out)} events")


async def order(http: httpx.AsyncClient, token: str, customer: str, item: str) -> None:
    response = await http.post("/intents/shop.Order", headers=bearer(token),
                               json={"customer": customer, "item": item})  # fmt: skip
    assert response.status_code == 202, response.text


async def test_sse_streams_what_the_token_may_read_and_resumes(broker: str) -> None:
    async with served(broker) as s:
        topic = s.run.topology.reactors["orders"].topic
        url = f"/live/{topic}"
        async with s.http.stream("GET", url, headers=bearer(READ_ALL)) as everything, \
                s.http.stream("GET", url, headers=bearer(READ_ALICE)) as alices:  # fmt: skip
            assert everything.status_code == 200
            assert everything.headers["content-type"].startswith("text/event-stream")
            await asyncio.sleep(0.3)  # both subscribed
            for i, who in enumerate(["alice", "bob", "alice", "bob"]):
                await order(s.http, ALICE if who == "alice" else BOB, who, f"item{i}")
            seen = await take(everything, 4)
            mine = await take(alices, 2)
        items = [orjson.loads(e["data"])["data"]["item"] for e in seen]
        assert sorted(items) == ["item0", "item1", "item2", "item3"]
        assert [orjson.loads(e["data"])["data"]["customer"] for e in mine] == ["alice"] * 2
        first = orjson.loads(seen[0]["data"])
        assert seen[0]["id"] == f"{topic}/{first['partition']}/{first['offset']}"
        assert ALICE not in seen[0]["data"] and first["principal"] in ("alice", "bob")
        # resume after the second event: the rest, once each
        resumed_headers = {**bearer(READ_ALL), "Last-Event-ID": seen[1]["id"]}
        async with s.http.stream("GET", url, headers=resumed_headers) as again:
            await order(s.http, ALICE, "alice", "item4")
            rest = await take(again, 3)
        assert [e["id"] for e in rest[:2]] == [e["id"] for e in seen[2:]]
        assert orjson.loads(rest[2]["data"])["data"]["item"] == "item4"


async def test_a_live_feed_needs_a_valid_token(broker: str) -> None:
    async with served(broker) as s:
        topic = s.run.topology.reactors["orders"].topic
        assert (await s.http.get(f"/live/{topic}")).status_code == 401
        bad = await s.http.get(f"/live/{topic}", headers=bearer("not.a-token"))
        assert bad.status_code == 401
        internal = await s.http.get(f"/live/{s.run.topology.denied_topic}",
                                    headers=bearer(READ_ALL))  # fmt: skip
        assert internal.status_code == 404


async def test_websocket_takes_the_token_in_its_first_message(broker: str) -> None:
    async with served(broker) as s:
        topic = s.run.topology.reactors["orders"].topic
        url = f"ws://{s.service.address}/live/{topic}"
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"token": READ_ALICE}).decode())
            await asyncio.sleep(0.3)
            await order(s.http, BOB, "bob", "x")
            await order(s.http, ALICE, "alice", "y")
            event = orjson.loads(await asyncio.wait_for(ws.recv(), WAIT))
            assert event["data"] == {"customer": "alice", "item": "y", "qty": 1}
        async with websockets.connect(url) as ws:
            await ws.send(orjson.dumps({"token": "forged"}).decode())
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008


async def test_a_slow_subscriber_is_dropped_and_told_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub does not wait for anyone: a subscriber QUEUE events behind is dropped (its
    queue emptied, a close with the reason in its place); the others go on."""
    monkeypatch.setattr(live, "QUEUE", 5)
    topology = shop()
    hub = live.TopicHub(MemoryTransport("memory://slow"), topology, "orders")
    grants = topology.hierarchy.compile([Capability.parse("read:customer/*")])
    slow, quick = hub.subscribe(grants, None), hub.subscribe(grants, None)
    for i in range(12):
        hub.publish(live.Event(f"orders/0/{i}", "shop.Order", ("read", "customer/a"), b"{}"))
        if not quick.queue.empty():
            quick.queue.get_nowait()
    assert slow.dropped == live.SLOW and slow.queue.get_nowait() is None
    assert quick.dropped is None and quick in hub.subscribers
