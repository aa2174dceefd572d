"""A small MCP server for the MCP client tests (``mcp.server.MCPServer``), and a topology
that calls it (for the worker processes of tests/processes/test_mcp_processes.py).

Its tools: ``echo`` (answers), ``fail`` (a tool error), ``slow`` (sleeps), ``flaky``
(idempotent: fails its first ``failures`` attempts per key, counted in this process),
``record`` (not idempotent: appends its key to ``$MCPTOOLS_LOG``, then sleeps) and
``record_idem`` (idempotent: the same, sleeping only the first time a key comes).

Over stdio: ``python tests/support/mcptools.py`` (or ``-m support.mcptools`` from tests/);
over Streamable HTTP: :func:`serving_http`, uvicorn on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections import Counter
from collections.abc import AsyncIterator, Generator
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from packetflow import Context, Intent, Topology
from packetflow.engine.mcpcall import McpResult, mcp_call
from packetflow.mcp.client import StdioServer, mcp_servers

HERE = Path(__file__).resolve()
IDEMPOTENT = ToolAnnotations(idempotent_hint=True)
NOT_IDEMPOTENT = ToolAnnotations(idempotent_hint=False, destructive_hint=False)


def build() -> MCPServer:
    """A fresh server (its own ``flaky`` counts)."""
    server = MCPServer("mcptools")
    tries: Counter[str] = Counter()

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True, read_only_hint=True))
    def echo(text: str) -> str:
        """Answers with ``text``."""
        return text

    @server.tool(annotations=NOT_IDEMPOTENT)
    def fail(message: str) -> str:
        """Always a tool error."""
        raise ToolError(message)

    @server.tool(annotations=NOT_IDEMPOTENT)
    async def slow(seconds: float) -> str:
        """Answers after ``seconds``."""
        await asyncio.sleep(seconds)
        return "slept"

    @server.tool(annotations=IDEMPOTENT)
    def flaky(key: str, failures: int) -> dict[str, Any]:
        """Fails the first ``failures`` times ``key`` comes, then answers."""
        tries[key] += 1
        if tries[key] <= failures:
            raise ToolError(f"attempt {tries[key]} fails")
        return {"key": key, "attempt": tries[key]}

    @server.tool(annotations=NOT_IDEMPOTENT)
    async def record(key: str, seconds: float = 0.0) -> str:
        """Appends ``key`` to $MCPTOOLS_LOG (every invocation counts), then sleeps."""
        _append(key)
        await asyncio.sleep(seconds)
        return f"recorded {key}"

    @server.tool(annotations=IDEMPOTENT)
    async def record_idem(key: str, seconds: float = 0.0) -> str:
        """As ``record``, but sleeps only the first time ``key`` comes."""
        if _append(key) == 1:
            await asyncio.sleep(seconds)
        return f"recorded {key}"

    return server


def _append(key: str) -> int:
    """Append ``key`` to $MCPTOOLS_LOG; how many times it is there now."""
    path = Path(os.environ["MCPTOOLS_LOG"])
    with path.open("a") as f:
        f.write(key + "\n")
    return invocations(path, key)


def invocations(path: Path, key: str) -> int:
    """How many times ``record``/``record_idem`` ran for ``key``."""
    return path.read_text().splitlines().count(key) if path.exists() else 0


def stdio_command() -> list[str]:
    """How a worker starts this server over stdio."""
    return [sys.executable, str(HERE)]


class _Bearer:
    """Refuses requests without ``Authorization: Bearer <token>`` (401)."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.expected = app, f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        given = dict(scope.get("headers", [])).get(b"authorization")
        if scope["type"] == "http" and given != self.expected:
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b"no"})
            return
        await self.app(scope, receive, send)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.asynccontextmanager
async def serving_http(token: str | None = None) -> AsyncIterator[str]:
    """A fresh server over Streamable HTTP (demanding ``token`` as a bearer token, if
    given) in this event loop: its URL."""
    app: Any = build().streamable_http_app()
    if token is not None:
        app = _Bearer(app, token)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                    access_log=False, lifespan="on"))  # fmt: skip
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:  # uvicorn sets a flag, no event
            if task.done():
                await task
                raise RuntimeError("the MCP test server did not start")
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        except TimeoutError:
            server.force_exit = True
            await task


# -- a topology calling these tools over stdio (run by worker processes) -----------------

topology = Topology("mcpcalls", allow_unsigned=True, processing_guarantee="exactly_once")
mcp_servers(topology, tools=StdioServer(stdio_command(), env_from=["MCPTOOLS_LOG"]))


class Lookup(Intent, type_name="mcptools.Lookup", key="key", requires=["look:up/{key}"]):
    key: str
    tool: str
    seconds: float = 0.0


@topology.reactor(Lookup | McpResult, topic="lookups")
def lookup(intent: Lookup | McpResult, ctx: Context) -> Any:
    if isinstance(intent, Lookup):
        args = {"key": intent.key, "seconds": intent.seconds}
        return mcp_call("tools", intent.tool, args, timeout=60)
    return None  # the test reads the results on this topic


if __name__ == "__main__":
    build().run("stdio")
