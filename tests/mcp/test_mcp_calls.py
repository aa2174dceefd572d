"""The durable MCP client effect on every transport (``broker``): a reactor's ``mcp_call``
and its ``McpResult`` back on the reactor's topic, in the caller's context; a tool error, a
timeout, an idempotent tool retried, a call refused for want of ``call:mcp/...``; over
stdio and over Streamable HTTP (with a bearer token read from the environment)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
from support.mcptools import invocations, serving_http, stdio_command
from support.running import WAIT, Running, new_topology, running, unique

from packetflow import Context, Intent, reply
from packetflow.engine.describe import as_dict
from packetflow.engine.mcpcall import McpResult, mcp_call
from packetflow.engine.transport import Record
from packetflow.mcp.client import HttpServer, ServerDecl, StdioServer, mcp_servers

TOKEN = "s3cret-mcp-token"


class Ask(Intent, type_name="mcpcalls.Ask", key="key", requires=["ask:thing/{key}"]):
    key: str
    tool: str
    arguments: dict[str, Any] = {}
    timeout: float = 10.0


class Answered(Intent, type_name="mcpcalls.Answered", key="key", internal=True):
    key: str
    outcome: str
    text: str


def _caller(server: ServerDecl, guarantee: str = "at_least_once") -> tuple[Any, str]:
    topo = new_topology("mcpc", allow_unsigned=True, processing_guarantee=guarantee)
    mcp_servers(topo, tools=server)
    topic = unique("asks")

    @topo.reactor(Ask | McpResult, topic=topic, emits=[Answered])
    def ask(intent: Ask | McpResult, ctx: Context) -> Any:
        if isinstance(intent, Ask):
            return mcp_call("tools", intent.tool, intent.arguments, timeout=intent.timeout)
        # the result comes back keyed as the call, in the caller's context: it can reply
        answered = Answered(key=ctx.requester or "?", outcome=intent.outcome, text=intent.text)
        return reply(answered) if ctx.reply_to else None

    return topo, topic


def _ctx(key: str, *grants: str) -> Context:
    return Context.new(principal="alice", capabilities=[f"ask:thing/{key}", *grants])


async def _results(run: Running, topic: str, count: int) -> dict[str, McpResult]:
    received = await run.client.wait_for(topic, 2 * count, timeout=WAIT)  # asks + results
    await run.idle()
    out = {r.record.key.decode(): r.intent for r in received
           if isinstance(r.intent, McpResult)}  # fmt: skip
    assert len(out) == count, [r.intent for r in received]
    return out


@asynccontextmanager
async def _stdio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ServerDecl]:
    monkeypatch.setenv("MCPTOOLS_LOG", str(tmp_path / "invocations"))
    yield StdioServer(stdio_command(), env_from=["MCPTOOLS_LOG"])


@asynccontextmanager
async def _http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ServerDecl]:
    monkeypatch.setenv("MCPTOOLS_LOG", str(tmp_path / "invocations"))
    monkeypatch.setenv("MCPTOOLS_AUTH", f"Bearer {TOKEN}")
    async with serving_http(TOKEN) as url:
        yield HttpServer(url, headers_env={"Authorization": "MCPTOOLS_AUTH"})


SERVERS = {"stdio": _stdio, "http": _http}


@pytest.mark.parametrize("via", ["stdio", "http"])
async def test_calls_come_back_to_their_caller_with_what_the_tool_said(
    broker: str, via: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    caplog.set_level(logging.DEBUG, logger="packetflow")
    async with SERVERS[via](tmp_path, monkeypatch) as server:
        topo, topic = _caller(server)
        grants = ("call:mcp/tools/*",)
        async with running(topo, broker) as run:
            await run.send(Ask(key="e", tool="echo", arguments={"text": "hi"}), _ctx("e", *grants))
            await run.send(Ask(key="f", tool="fail", arguments={"message": "no"}),
                           _ctx("f", *grants))  # fmt: skip
            await run.send(Ask(key="s", tool="slow", arguments={"seconds": 5}, timeout=2.0),
                           _ctx("s", *grants))  # fmt: skip
            await run.send(Ask(key="r", tool="flaky", arguments={"key": via, "failures": 2}),
                           _ctx("r", *grants))  # fmt: skip
            results = await _results(run, topic, 4)
            registry = run.worker.metrics.registry
            calls = registry.value("packetflow_mcp_client_calls_total", server="tools",
                                   tool="echo", outcome="ok")  # fmt: skip
    echo, fail, slow, flaky = (results[k] for k in "efsr")
    assert (echo.outcome, echo.text, echo.attempts) == ("ok", "hi", 1)
    assert (fail.outcome, fail.attempts) == ("error", 1)  # not idempotent: never again
    assert "no" in (fail.error or "")
    # the timeout bounds the whole call: opening the session too (0 attempts when that
    # alone took it, on a loaded machine)
    assert slow.outcome == "timeout" and slow.attempts <= 1
    assert (flaky.outcome, flaky.attempts) == ("ok", 3)  # idempotent: retried with backoff
    assert flaky.structured == {"key": via, "attempt": 3}
    assert calls == 1
    assert TOKEN not in caplog.text
    assert all(TOKEN not in r.model_dump_json() for r in results.values())


async def test_a_call_without_its_capability_comes_back_denied(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCPTOOLS_LOG", str(tmp_path / "invocations"))
    topo, topic = _caller(StdioServer(stdio_command(), env_from=["MCPTOOLS_LOG"]))
    async with running(topo, broker) as run:
        await run.send(Ask(key="d", tool="record", arguments={"key": "d"}),
                       _ctx("d", "call:mcp/tools/echo"))  # fmt: skip
        (denied,) = (await _results(run, topic, 1)).values()
        refused = await run.denied(1)
    assert denied.outcome == "denied"
    assert "call:mcp/tools/record" in (denied.error or "")
    assert refused[0].header("pf-reason") == "insufficient"
    assert not (tmp_path / "invocations").exists()  # the tool never ran


async def test_an_intent_handled_twice_calls_once(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At least once, a record may be handled again: the same intent makes the same call
    (its id derives from the intent's), which gets the recorded result, not a second run."""
    async with _stdio(tmp_path, monkeypatch) as server:
        topo, topic = _caller(server)
        ask = Ask(key="twice", tool="record", arguments={"key": "twice"})
        context = _ctx("twice", "call:mcp/tools/record")
        async with running(topo, broker) as run:
            await run.send(ask, context)
            await _results(run, topic, 1)
            await run.send(ask, context)  # the same intent again
            received = await run.wait_for(topic, 4)
    first, again = (r.intent for r in received if isinstance(r.intent, McpResult))
    assert first == again
    assert (first.outcome, first.text) == ("ok", "recorded twice")
    assert invocations(tmp_path / "invocations", "twice") == 1


async def test_a_result_may_make_the_same_call_again(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result is its calling intent's again, but calling anew from it is a new call."""
    monkeypatch.setenv("MCPTOOLS_LOG", str(tmp_path / "invocations"))
    topo = new_topology("mcpa", allow_unsigned=True)
    mcp_servers(topo, tools=StdioServer(stdio_command(), env_from=["MCPTOOLS_LOG"]))
    topic = unique("again")

    @topo.reactor(Ask | McpResult, topic=topic, state=int)
    def twice(intent: Ask | McpResult, ctx: Context, calls: int) -> tuple[int, Any]:
        if isinstance(intent, McpResult) and calls >= 2:
            return calls, None
        return calls + 1, mcp_call("tools", "record", {"key": "same"})

    async with running(topo, broker) as run:
        await run.send(Ask(key="a", tool="record"), _ctx("a", "call:mcp/tools/record"))
        received = await run.wait_for(topic, 3)  # the ask, two results
    first, second = (r.intent for r in received if isinstance(r.intent, McpResult))
    assert first.call_id != second.call_id
    assert invocations(tmp_path / "invocations", "same") == 2


class _Spans:
    """A worker's tracing that only notes the effect spans opened."""

    def __init__(self) -> None:
        self.effects: list[str] = []

    def handling(self, record: Record, context: Context) -> Any:
        return nullcontext()

    @contextmanager
    def effect(self, name: str) -> Iterator[None]:
        self.effects.append(name)
        yield

    def entry(self, name: str, attributes: dict[str, str]) -> Any:
        return nullcontext(("0" * 32, "0" * 16))


async def test_the_result_answers_whoever_asked_the_caller(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The result comes in the caller's context: its reactor replies to the request (under
    exactly-once); the call has a span of its own where the worker traces."""
    spans = _Spans()
    async with _stdio(tmp_path, monkeypatch) as server:
        topo, _ = _caller(server, "exactly_once")
        async with running(topo, broker, tracing=spans) as run:
            answer = await run.client.ask(
                Ask(key="q", tool="echo", arguments={"text": "back"}),
                context=_ctx("q", "call:mcp/tools/echo"), timeout=WAIT,
            )  # fmt: skip
    assert isinstance(answer, Answered)
    assert (answer.outcome, answer.text) == ("ok", "back")
    assert spans.effects == ["McpCall", "mcp tools/echo"]  # recorded, then carried out


def test_declared_servers_show_without_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    topo = new_topology("mcpd", allow_unsigned=True)
    mcp_servers(topo, weather=HttpServer("https://user:pw@example.org/mcp",
                                         headers_env={"Authorization": "WEATHER_AUTH"}),
                files=StdioServer(["python", "-m", "tools"], env_from=["HOME"]))  # fmt: skip
    (agent,) = as_dict(topo)["agents"]
    assert agent["topic"] == f"{topo.name}.mcp.calls"
    assert agent["mcp_servers"] == {
        "weather": "http: https://example.org/mcp (headers: Authorization from $WEATHER_AUTH)",
        "files": "stdio: python -m tools (env HOME)",
    }
    with pytest.raises(ValueError, match="letters, digits"):
        mcp_call("tools", "a/b")
    with pytest.raises(ValueError, match="positive"):
        mcp_call("tools", "echo", timeout=0)
