"""MCP through real processes on Kafka: ``packetflow mcp serve`` as a subprocess of the
official MCP client over stdio (the way desktop hosts run it), and two workers serving
MCP at ``/mcp`` where a state resource is read from whichever worker owns the key."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable

import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters
from support.mcpserved import mcp_client
from support.workerproc import (
    WORKER_KEY,
    WorkerProcess,
    assert_user_error,
    cli,
    new_namespace,
    worker_env,
)

from packetflow import issue_token

pytestmark = pytest.mark.kafka

TELLER = issue_token("teller", ["teller:account/*"], key=WORKER_KEY, ttl=3600)
CASHIER = issue_token("cashier", ["deposit:account/*"], key=WORKER_KEY, ttl=3600)
AUDITOR = issue_token("auditor", ["read:account/*", "observe:topology/*"], key=WORKER_KEY, ttl=3600)
ACCOUNTS = [f"acct-{i}" for i in range(8)]


def body(result: types.CallToolResult) -> dict:
    text = result.content[0]
    assert isinstance(text, types.TextContent)
    return json.loads(text.text)


async def _http(worker: WorkerProcess) -> str:
    found = await worker.wait_log(r"serving HTTP on (http://127\.0\.0\.1:\d+)", timeout=60)
    return found.group(1)


async def _state(client: Client, account: str) -> dict | None:
    """The account's state as the resource gives it; None while ownership is moving."""
    try:
        result = await client.read_resource(f"state://accounts/{account}")
    except Exception as exc:  # the owner not yet announced: "unavailable, retry"
        assert "unavailable" in str(exc), exc
        return None
    (content,) = result.contents
    assert isinstance(content, types.TextResourceContents)
    return json.loads(content.text)


async def _balances(client: Client, wanted: dict[str, int], timeout: float = 60.0) -> dict:
    """Read every account until each shows its wanted balance: account -> state."""
    got: dict[str, dict] = {}
    async with asyncio.timeout(timeout):
        while len(got) < len(wanted):
            for account, balance in wanted.items():
                state = await _state(client, account)
                if state is not None and (state["value"] or {}).get("balance") == balance:
                    got[account] = state
            await asyncio.sleep(0.2)
    return got


async def test_mcp_serve_over_stdio_publishes_checks_and_reads_state(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    ns = new_namespace()
    worker = spawn("mcp-w", ns, module="topologies.orders", args=["--http", "127.0.0.1:0"])
    await _http(worker)
    await worker.wait_log(r"assigned .*accounts\[", timeout=60)
    env = {**worker_env(ns), "PACKETFLOW_TOKEN": CASHIER}
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "packetflow", "mcp", "serve", "topologies.orders", "--broker", kafka_url],
        env=env,
    )
    async with Client(params, read_timeout_seconds=60) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert tools == {"orders.Deposit", "propose_intent"}  # what the cashier may send
        sent = await client.call_tool("orders.Deposit", {"account": "acct-1", "amount": 30})
        assert not sent.is_error, sent
        assert body(sent)["offset"] >= 0
        denied = await client.call_tool("orders.Withdraw", {"account": "acct-1", "amount": 5})
        assert denied.is_error and body(denied)["missing"] == ["withdraw:account/acct-1"]
        bad = await client.call_tool("orders.Deposit", {"account": "acct-1", "amount": "lots"})
        assert bad.is_error and body(bad)["reason"] == "invalid"
        # the cashier may not read state: refused here, before any worker is asked
        with pytest.raises(Exception, match="insufficient"):
            await client.read_resource("state://accounts/acct-1")
    env["PACKETFLOW_TOKEN"] = AUDITOR
    params = StdioServerParameters(command=params.command, args=params.args, env=env)
    async with Client(params, read_timeout_seconds=60) as client:
        (state,) = (await _balances(client, {"acct-1": 30})).values()
        assert state["worker"] and state["offset"] >= 1  # asked of the owner over HTTP
        prompt = await client.get_prompt("summarise-dead-letters", {"hours": "1"})
        assert prompt.messages and "dead letters" in prompt.messages[0].content.text  # type: ignore[union-attr]


async def test_state_resources_come_from_the_owning_worker(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    ns = new_namespace()
    a = spawn("mcp-a", ns, module="topologies.orders", args=["--http", "127.0.0.1:0"])
    a_url = await _http(a)
    await a.wait_log(r"assigned .*accounts\[", timeout=60)
    b = spawn("mcp-b", ns, module="topologies.orders", args=["--http", "127.0.0.1:0"])
    await _http(b)
    await b.wait_log(r"assigned .*accounts\[", timeout=60)
    async with mcp_client(f"{a_url}/mcp", TELLER) as teller:
        for i, account in enumerate(ACCOUNTS):
            done = await teller.call_tool("orders.Deposit", {"account": account, "amount": 10 + i})
            assert not done.is_error, done
    async with mcp_client(f"{a_url}/mcp", AUDITOR) as auditor:
        states = await _balances(auditor, {acct: 10 + i for i, acct in enumerate(ACCOUNTS)})
    # both workers own some accounts: what a does not own, b answered
    assert len({s["worker"] for s in states.values()}) == 2, states


async def test_mcp_serve_over_http_takes_each_callers_token(kafka_url: str) -> None:
    ns = new_namespace()
    args = ["mcp", "serve", "topologies.orders", "--broker", kafka_url, "--http", "127.0.0.1:0"]
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "packetflow", *args, env=worker_env(ns),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        said: list[str] = []  # aiokafka may log before (a topic just created has no leader)
        found = None
        async with asyncio.timeout(60):
            while found is None:
                said.append((await server.stderr.readline()).decode())
                assert said[-1], "".join(said)  # it ended before serving
                found = re.search(r"serving MCP for orders on (http://\S+/mcp)", said[-1])
        async with mcp_client(found.group(1), CASHIER) as cashier:
            assert {t.name for t in (await cashier.list_tools()).tools} == {
                "orders.Deposit", "propose_intent"
            }  # fmt: skip
            sent = await cashier.call_tool("orders.Deposit", {"account": "acct-3", "amount": 4})
            assert not sent.is_error, sent
        async with mcp_client(found.group(1), TELLER) as teller:
            tools = {t.name for t in (await teller.list_tools()).tools}
            assert {"orders.Withdraw", "orders.Transfer", "orders.AuditBalance"} <= tools
    finally:
        server.terminate()
        assert await asyncio.wait_for(server.wait(), 30) == 0  # a clean stop on SIGTERM


def test_mcp_serve_user_errors_are_one_line(kafka_url: str) -> None:
    serve = ("mcp", "serve", "topologies.orders")
    forged = CASHIER[:-4] + "AAAA"
    assert_user_error(cli(*serve, "--broker", kafka_url, "--token", forged), "token does not hold")
    assert_user_error(cli(*serve, "--broker", "memory://"), "memory:// lives inside one process")
    assert_user_error(cli(*serve, "--stdio", "--http", "127.0.0.1:0"), "not both")
