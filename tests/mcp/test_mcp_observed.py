"""MCP calls as the engine reports them: a span per call that the intent's handling
continues, counts by tool and outcome on ``/metrics``, and tool annotations declared on
intent classes."""

from __future__ import annotations

import httpx
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from support.mcpserved import mcp_client
from support.running import running
from support.webshop import KEY, Order, shop

from packetflow import Intent, issue_token
from packetflow.mcp import McpMount, hints_of, tool_hints
from packetflow.mcp.tools import tool_of
from packetflow.observability.tracing import OtelTracing
from packetflow.web import HttpService

ALICE = issue_token("alice", ["order:customer/alice"], key=KEY, ttl=3600)


async def test_a_tool_call_starts_the_trace_its_intent_continues() -> None:
    exporter = InMemorySpanExporter()
    tracing = OtelTracing.exporting(exporter, batch=False)
    service = HttpService("127.0.0.1:0", mounts=[McpMount()])
    topo = shop()
    broker = "memory://mcp-traced"
    async with running(topo, broker, services=[service], tracing=tracing) as run:
        async with mcp_client(f"{service.url}/mcp", ALICE) as client:
            done = await client.call_tool("shop.Order", {"customer": "alice", "item": "tea"})
            assert not done.is_error
            await client.call_tool("shop.Order", {"customer": "bob", "item": "tea"})  # denied
        await run.wait_for(topo.reactors["orders"].topic, 1)
        await run.idle()
        async with httpx.AsyncClient(base_url=service.url) as http:
            scraped = (await http.get("/metrics")).text
    spans = {s.name: s for s in exporter.get_finished_spans()}
    call = spans["mcp tools/call shop.Order"]
    handled = spans[f"{topo.physical(topo.reactors['orders'].topic)} process"]
    assert call.kind is SpanKind.SERVER and call.parent is None
    assert handled.parent is not None and handled.parent.span_id == call.context.span_id
    assert handled.context.trace_id == call.context.trace_id
    assert 'packetflow_mcp_calls_total{outcome="published",tool="shop.Order"} 1.0' in scraped
    assert 'packetflow_mcp_calls_total{outcome="denied",tool="shop.Order"} 1.0' in scraped
    assert ALICE not in scraped
    tracing.shutdown()


def test_tool_annotations_come_from_the_intent_class() -> None:
    @tool_hints(title="Close an account", destructive=True, idempotent=True)
    class Close(
        Intent, type_name="hints.Close", key="account", requires=["close:account/{account}"]
    ):
        """Close an account for good."""

        account: str

    class Closed(Close, type_name="hints.Closed"):
        pass

    tool = tool_of(Close)
    assert tool.name == "hints.Close" and tool.title == "Close an account"
    assert tool.annotations is not None
    assert tool.annotations.destructive_hint is True
    assert tool.annotations.idempotent_hint is True
    assert tool.annotations.read_only_hint is None  # not said: the host decides
    assert tool.description is not None and tool.description.startswith("Close an account")
    assert hints_of(Closed).destructive is True  # inherited
    plain = tool_of(Order).annotations
    assert plain is not None and plain.destructive_hint is None
