"""The MCP app a worker serves at ``/mcp`` (Streamable HTTP), through the official MCP
client, on every transport: tools listed by what the caller's token may do, calls that
publish or wait for the reply, refusals as tool errors (audited, nothing published),
malformed arguments, resources and prompts."""

from __future__ import annotations

import json

import httpx
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from support.mcpserved import mcp_client, shop_with_mcp
from support.webshop import KEY, Order

from packetflow import Context, issue_token

ALICE = issue_token("alice", ["order:customer/alice"], key=KEY, ttl=3600)
READER = issue_token("rita", ["read:customer/*"], key=KEY, ttl=3600)
OPS = issue_token("ops", ["order:customer/*", "observe:topology/*", "read:customer/*"], key=KEY)


def body(result: types.CallToolResult) -> dict:
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    return json.loads(text.text)


async def test_tools_are_the_intents_a_token_may_send(broker: str) -> None:
    async with shop_with_mcp(broker) as (_, url):
        async with mcp_client(url, ALICE) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
        # shop.Placed is internal; propose_intent turns text into one of these
        assert set(tools) == {"shop.Order", "shop.Job", "propose_intent"}
        order = tools["shop.Order"]
        assert order.description is not None and "Order an item" in order.description
        assert "order:customer/{customer}" in order.description
        assert set(order.input_schema["properties"]) == {"customer", "item", "qty", "wait"}
        assert order.input_schema["required"] == ["customer", "item"]
        async with mcp_client(url, READER) as client:
            assert [t.name for t in (await client.list_tools()).tools] == ["propose_intent"]


async def test_a_call_publishes_the_intent_with_the_callers_token(broker: str) -> None:
    async with shop_with_mcp(broker) as (run, url):
        async with mcp_client(url, ALICE) as client:
            result = await client.call_tool("shop.Order", {"customer": "alice", "item": "tea"})
        assert not result.is_error, result
        sent = body(result)
        assert sent == result.structured_content and sent["offset"] >= 0
        (record,) = await run.wait_for(run.topology.reactors["orders"].topic, 1)
        assert record.intent == Order(customer="alice", item="tea")
        assert record.context is not None and record.context.intent_id == sent["intent_id"]
        assert record.context.principal == "alice" and record.header("pf-token") == ALICE


async def test_a_call_with_wait_returns_the_reply(broker: str) -> None:
    async with shop_with_mcp(broker) as (_, url), mcp_client(url, ALICE) as client:
        first = await client.call_tool("shop.Order", {"customer": "alice", "item": "a", "wait": 20})
        again = await client.call_tool("shop.Order", {"customer": "alice", "item": "b", "wait": 20})
        assert not first.is_error and not again.is_error, (first, again)
        assert body(first)["type"] == "shop.Placed"
        assert [body(r)["reply"]["orders"] for r in (first, again)] == [1, 2]
        failed = await client.call_tool(
            "shop.Order", {"customer": "alice", "item": "c", "qty": 0, "wait": 20}
        )  # the reactor raises: dead-lettered, the engine's refusal comes back at once
        assert failed.is_error and body(failed)["reason"] == "reactor-error"


async def test_a_denied_call_is_a_tool_error_audited_and_nothing_is_published(broker: str) -> None:
    async with shop_with_mcp(broker) as (run, url):
        async with mcp_client(url, ALICE) as client:
            denied = await client.call_tool("shop.Order", {"customer": "bob", "item": "tea"})
            assert denied.is_error
            refusal = body(denied)
            assert refusal["reason"] == "insufficient"
            assert refusal["missing"] == ["order:customer/bob"]
            assert ALICE not in json.dumps(refusal)  # a token never comes back
            ok = await client.call_tool("shop.Order", {"customer": "alice", "item": "tea"})
            assert not ok.is_error
        records = await run.wait_for(run.topology.reactors["orders"].topic, 1)
        assert [r.intent.customer for r in records if isinstance(r.intent, Order)] == ["alice"]
        audit = await run.client.read_audit()
        assert any(
            e.get("source") == "mcp:tools/call shop.Order"
            and e.get("missing") == ["order:customer/bob"]
            and e.get("holder") == "alice"
            for e in audit
        ), audit
        calls = run.worker.metrics.registry
        assert calls.value("packetflow_mcp_calls_total", tool="shop.Order", outcome="denied") == 1
        assert (
            calls.value("packetflow_mcp_calls_total", tool="shop.Order", outcome="published") == 1
        )


async def test_malformed_arguments_and_unknown_tools_are_tool_errors(broker: str) -> None:
    async with shop_with_mcp(broker) as (_, url), mcp_client(url, ALICE) as client:
        bad = await client.call_tool("shop.Order", {"customer": "alice", "item": "t", "qty": "x"})
        assert bad.is_error and body(bad)["reason"] == "invalid"
        assert "qty" in body(bad)["error"]
        missing = await client.call_tool("shop.Order", {"customer": "alice"})
        assert missing.is_error and "item" in body(missing)["error"]
        wait = await client.call_tool("shop.Order", {"customer": "alice", "item": "t", "wait": 600})
        assert wait.is_error and body(wait)["reason"] == "bad-wait"
        internal = await client.call_tool("shop.Placed", {"customer": "alice", "orders": 1})
        assert internal.is_error and body(internal)["reason"] == "unknown-tool"


async def test_without_a_valid_token_the_endpoint_answers_401(broker: str) -> None:
    async with shop_with_mcp(broker) as (run, url), httpx.AsyncClient() as http:
        request = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
        headers = {"accept": "application/json, text/event-stream"}
        assert (await http.post(url, json=request, headers=headers)).status_code == 401
        forged = {**headers, "authorization": f"Bearer {ALICE[:-4]}AAAA"}
        answer = await http.post(url, json=request, headers=forged)
        assert answer.status_code == 401
        assert "invalid_token" in answer.headers["www-authenticate"]
        audit = await run.client.read_audit()
        (refused,) = [e for e in audit if e.get("source") == "mcp:authenticate"]
        assert refused["holder"] == "alice" and refused["reason"] == "bad-signature"


async def test_resources_state_and_what_was_set_aside(broker: str) -> None:
    async with shop_with_mcp(broker) as (run, url):
        async with mcp_client(url, ALICE) as client:
            await client.call_tool("shop.Order", {"customer": "alice", "item": "a", "wait": 20})
            # alice may not observe the topology: she sees no resources and cannot read them
            assert (await client.list_resources()).resources == []
            with pytest.raises(MCPError, match="insufficient"):
                await client.read_resource(f"topology://{run.topology.name}")
        # a record sent with a token that does not cover it: the worker denies it
        await run.client.send(Order(customer="bob", item="x"), context=Context.new(token=ALICE))
        await run.wait_for(run.topology.denied_topic, 1)
        async with mcp_client(url, OPS) as client:
            uris = {str(r.uri) for r in (await client.list_resources()).resources}
            name = run.topology.name
            assert uris == {f"topology://{name}", f"deadletters://{name}", f"denials://{name}"}
            templates = (await client.list_resource_templates()).resource_templates
            assert "state://orders/{key}" in [t.uri_template for t in templates]
            state = await read_json(client, "state://orders/alice")
            assert state["value"] == 1 and state["key"] == "alice" and state["offset"] >= 1
            described = await read_json(client, f"topology://{name}")
            assert described["name"] == name
            denials = await read_json(client, f"denials://{name}")
            assert denials["count"] == 1 and denials["by_reason"] == {"insufficient": 1}
            (latest,) = denials["latest"]
            assert latest["missing"] == ["order:customer/bob"] and latest["key"] == "bob"
            assert ALICE not in json.dumps(denials)  # the record's headers are not shown
            prompt = await client.get_prompt("explain-denial", {})
            text = prompt.messages[0].content
            assert isinstance(text, types.TextContent)
            assert "order:customer/bob" in text.text and "insufficient" in text.text
            listed = [p.name for p in (await client.list_prompts()).prompts]
            assert listed == ["explain-denial", "summarise-dead-letters"]


async def read_json(client: object, uri: str) -> dict:
    result = await client.read_resource(uri)  # type: ignore[attr-defined]
    (content,) = result.contents
    return json.loads(content.text)


async def test_propose_intent_proposes_and_checks_but_publishes_nothing(broker: str) -> None:
    async with shop_with_mcp(broker) as (run, url), mcp_client(url, ALICE) as client:
        mine = body(await client.call_tool("propose_intent", {"text": "order 2 tea for alice"}))
        assert mine["complete"] and mine["allowed"]
        assert mine["tool"] == "shop.Order"
        assert mine["arguments"] == {"customer": "alice", "item": "tea", "qty": 2}
        # a proposal the token does not cover: said so, with what is missing
        other = body(await client.call_tool("propose_intent", {"text": "order tea for bob"}))
        assert other["complete"] and not other["allowed"]
        assert other["refusal"]["missing"] == ["order:customer/bob"]
        partial = body(await client.call_tool("propose_intent", {"text": "order for alice"}))
        assert not partial["complete"] and partial["proposal"]["missing"] == ["item"]
        assert "could not fill item" in partial["error"]
        # confirmed: the agent calls the intent's own tool, checked again
        sent = await client.call_tool(mine["tool"], mine["arguments"])
        assert not sent.is_error
        (record,) = await run.wait_for(run.topology.reactors["orders"].topic, 1)
        assert record.intent == Order(customer="alice", item="tea", qty=2)
