"""A call made with a signed token: the MCP client keeps the token's id, grants and
validity, never the token (not in its store, its changelog or its result), its state is
not readable from outside, and what the caller does with the result still holds the
token's grants."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from support.mcpserved import mcp_client
from support.mcptools import stdio_command
from support.running import new_topology, running, unique
from support.webshop import KEY, SECRET

from packetflow import Context, Intent, Security, issue_token
from packetflow.mcp import McpMount, McpResult, StdioServer, mcp_call, mcp_servers
from packetflow.web import HttpService


class Ask(Intent, type_name="tok.Ask", key="key", requires=["ask:thing/{key}"]):
    key: str


class Answered(Intent, type_name="tok.Answered", key="key", requires=["ask:thing/{key}"]):
    key: str
    text: str


async def test_a_calls_token_is_kept_as_its_grants_never_as_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPTOOLS_LOG", str(tmp_path / "invocations"))
    topo = new_topology("tok", security=Security(trusted_keys=[KEY], worker_secret=SECRET))
    mcp_servers(topo, tools=StdioServer(stdio_command(), env_from=["MCPTOOLS_LOG"]))
    asks, answers = unique("asks"), unique("answers")
    topo.route(Answered, answers)

    @topo.reactor(Ask | McpResult, topic=asks, emits=[Answered])
    def ask(intent: Any, ctx: Context) -> Any:
        if isinstance(intent, Ask):
            return mcp_call("tools", "echo", {"text": "hi"}, timeout=10)
        return Answered(key="k", text=intent.text)  # needs ask:thing/k: the kept grants

    @topo.reactor(Answered, topic=answers, state=list)
    def answered(intent: Answered, ctx: Context, seen: list) -> tuple[list, None]:
        return [*seen, ctx.principal], None

    alice = issue_token("alice", ["ask:thing/k", "call:mcp/tools/*"], key=KEY, ttl=3600)
    otto = issue_token("otto", ["observe:topology/*"], key=KEY, ttl=3600)
    service = HttpService("127.0.0.1:0", mounts=[McpMount()])
    async with running(topo, "memory://mcp-tokens", services=[service]) as run:
        await run.send(Ask(key="k"), Context.new(token=alice))
        await run.wait_for(answers, 1)
        await run.idle()
        denied = await run.read(topo.denied_topic)
        assert [d.set_aside for d in denied] == []
        assert run.state("answered", "k") == ["alice"]  # the result acted with alice's grants
        (result,) = [r for r in await run.read(asks) if isinstance(r.intent, McpResult)]
        assert result.header("pf-token") is None and result.context is not None
        assert result.context.token is None and result.context.principal == "alice"
        raw: list[bytes] = []
        await run.client.transport.read_topic(
            topo.physical(topo.changelog_topic("mcp-client")), lambda r: raw.append(r.value or b"")
        )
        assert raw and not any(alice.encode() in v for v in raw)
        (call,) = await run.read(f"{topo.name}.mcp.calls")
        call_id = (call.record.key or b"").decode()
        assert alice not in json.dumps(run.worker.state("mcp-client", call_id), default=str)
        async with mcp_client(f"{service.url}/mcp", otto) as client:
            with pytest.raises(MCPError, match="not a stateful"):
                await client.read_resource(f"state://mcp-client/{call_id}")
            templates = (await client.list_resource_templates()).resource_templates
            assert "state://mcp-client/{key}" not in [t.uri_template for t in templates]
