"""The worker's HTTP server through httpx, on every transport: intents in with bearer tokens
checked by the worker's guard (each refusal a status and a reason, audited), replies with
``?wait=``, declared routes, state, health and the OpenAPI document."""

from __future__ import annotations

import orjson
from openapi_spec_validator import validate
from support.webshop import KEY, Order, Served, bearer, served

from packetflow import issue_token

ALICE = issue_token("alice", ["order:customer/alice"], key=KEY, ttl=3600)


def orders(s: Served) -> str:
    return s.run.topology.reactors["orders"].topic


async def test_an_intent_posted_with_a_token_reaches_its_reactor(broker: str) -> None:
    async with served(broker) as s:
        response = await s.http.post("/intents/shop.Order", json={"customer": "alice",
                                     "item": "tea"}, headers=bearer(ALICE))  # fmt: skip
        assert response.status_code == 202, response.text
        body = response.json()
        assert body["topic"] == orders(s) and body["offset"] >= 0 and body["intent_id"]
        (record,) = await s.run.wait_for(orders(s), 1)
        assert record.intent == Order(customer="alice", item="tea")
        assert record.context is not None and record.context.principal == "alice"
        assert record.header("pf-token") == ALICE  # the worker checks it again
        await s.run.idle()
        assert s.run.state("orders", "alice") == 1


async def test_wait_returns_the_reply_or_says_why_not(broker: str) -> None:
    async with served(broker) as s:
        ok = await s.http.post("/intents/shop.Order?wait=10s", headers=bearer(ALICE),
                               json={"customer": "alice", "item": "tea"})  # fmt: skip
        assert ok.status_code == 200, ok.text
        assert ok.json()["type"] == "shop.Placed"
        assert ok.json()["reply"] == {"customer": "alice", "orders": 1}
        failed = await s.http.post("/intents/shop.Order?wait=10s", headers=bearer(ALICE),
                                   json={"customer": "alice", "item": "tea", "qty": 0})  # fmt: skip
        assert failed.status_code == 422, failed.text
        assert failed.json()["reason"] == "reactor-error"
        late = await s.http.post("/intents/shop.Job?wait=500ms", headers=bearer(ALICE),
                                 json={"customer": "alice"})  # fmt: skip
        assert late.status_code == 504 and late.json()["reason"] == "timeout"


async def test_each_refusal_has_its_status_and_reason(broker: str) -> None:
    expired = issue_token("alice", ["order:customer/alice"], key=KEY, ttl=1,
                          now=1_000_000_000)  # fmt: skip
    bob = issue_token("bob", ["order:customer/bob"], key=KEY, ttl=3600)
    body = {"customer": "alice", "item": "tea"}
    async with served(broker) as s:
        http = s.http
        missing = await http.post("/intents/shop.Order", json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["reason"] == "no-token"
        old = await http.post("/intents/shop.Order", json=body, headers=bearer(expired))
        assert (old.status_code, old.json()["reason"]) == (401, "expired")
        garbage = await http.post("/intents/shop.Order", json=body, headers=bearer("x.y"))
        assert garbage.status_code == 401
        wrong = await http.post("/intents/shop.Order", json=body, headers=bearer(bob))
        assert (wrong.status_code, wrong.json()["reason"]) == (403, "insufficient")
        assert wrong.json()["missing"] == ["order:customer/alice"]
        invalid = await http.post("/intents/shop.Order", json={"customer": "alice"},
                                  headers=bearer(ALICE))  # fmt: skip
        assert invalid.status_code == 400 and invalid.json()["reason"] == "invalid"
        assert invalid.json()["errors"][0]["loc"] == ["item"]
        not_json = await http.post("/intents/shop.Order", content=b"{", headers=bearer(ALICE))
        assert (not_json.status_code, not_json.json()["reason"]) == (400, "bad-json")
        unknown = await http.post("/intents/shop.Nope", json=body, headers=bearer(ALICE))
        assert unknown.status_code == 404
        internal = await http.post("/intents/shop.Placed", json={}, headers=bearer(ALICE))
        assert internal.status_code == 404
        method = await http.get("/intents/shop.Order")
        assert method.status_code == 405
        huge = await http.post("/intents/shop.Order", headers=bearer(ALICE),
                               content=b" " * (s.run.topology.max_record_bytes + 1))  # fmt: skip
        assert huge.status_code == 413
        await s.run.idle()
        assert await s.run.read(orders(s)) == []  # nothing refused was published
        audit = [e for e in await s.run.client.read_audit() if e.get("event") == "denied"]
        assert {e["reason"] for e in audit} >= {"expired", "insufficient"}
        assert all(str(e["source"]).startswith("http:POST /intents/") for e in audit)


async def test_a_declared_route_fills_fields_from_the_path(broker: str) -> None:
    async with served(broker) as s:
        response = await s.http.post("/customers/alice/orders?item=cake&wait=10",
                                     headers=bearer(ALICE))  # fmt: skip
        assert response.status_code == 200, response.text
        (record,) = await s.run.wait_for(orders(s), 1)
        assert record.intent == Order(customer="alice", item="cake")
        other = await s.http.post("/customers/bob/orders?item=cake", headers=bearer(ALICE))
        assert other.status_code == 403  # the path names bob: alice's token does not cover him


async def test_state_health_and_openapi(broker: str) -> None:
    reader = issue_token("audit", ["read:customer/*"], key=KEY, ttl=3600)
    async with served(broker) as s:
        await s.http.post("/intents/shop.Order?wait=10", headers=bearer(ALICE),
                          json={"customer": "alice", "item": "tea"})  # fmt: skip
        got = await s.http.get("/state/orders/alice", headers=bearer(reader))
        assert got.status_code == 200, got.text
        assert got.json()["value"] == 1 and got.json()["offset"] >= 1
        assert (await s.http.get("/state/orders/alice", headers=bearer(ALICE))).status_code == 403
        assert (await s.http.get("/state/nope/alice", headers=bearer(reader))).status_code == 404
        assert (await s.http.get("/health/live")).json()["live"] is True
        ready = await s.http.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["ready"] is True
        doc = (await s.http.get("/openapi.json")).json()
        validate(doc)
        assert "/intents/shop.Order" in doc["paths"]
        assert "/customers/{customer}/orders" in doc["paths"]
        assert "/intents/shop.Placed" not in doc["paths"]  # internal: not accepted from outside


async def test_the_dashboards_feed_says_what_each_reactor_did(broker: str) -> None:
    """``/dashboard/events`` (the live part of the dashboard) needs observe:, and reports
    per reactor what it processed, with what the substrates registered."""
    async with served(broker) as s:
        name = s.run.topology.name
        observer = issue_token("olga", [f"observe:topology/{name}"], key=KEY, ttl=3600)
        refused = await s.http.get("/dashboard/events", headers=bearer(ALICE))
        assert (refused.status_code, refused.json()["reason"]) == (403, "insufficient")
        await s.http.post("/intents/shop.Order?wait=10", headers=bearer(ALICE),
                          json={"customer": "alice", "item": "tea"})  # fmt: skip
        async with s.http.stream("GET", "/dashboard/events", headers=bearer(observer)) as feed:
            async for line in feed.aiter_lines():
                if line.startswith("data:"):
                    metrics = orjson.loads(line[5:])
                    break
        assert metrics["reactors"]["orders"]["processed"] == 1
        assert metrics["reactors"]["jobs"]["processed"] == 0
        assert isinstance(metrics["substrates"], dict)
