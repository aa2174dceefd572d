"""Serving a topology's MCP app: mounted at ``/mcp`` of a worker's HTTP server
(:class:`McpMount`, what ``packetflow worker --http`` adds), or on its own with
:func:`serve` (``packetflow mcp serve``: stdio for desktop hosts, or Streamable HTTP),
where a :class:`~packetflow.engine.runtime.gate.Gate` checks callers as a worker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

from mcp.server.stdio import stdio_server
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from packetflow.core.context import Context
from packetflow.engine.client import Client
from packetflow.engine.runtime.gate import Gate, authorize_way_in
from packetflow.engine.runtime.outage import quiet_aiokafka
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.topology import Topology
from packetflow.engine.transport import Transport, open_transport
from packetflow.mcp.host import Host, in_worker, standalone
from packetflow.mcp.propose import propose_tool
from packetflow.mcp.server import Extra, McpApp
from packetflow.observability.server import AsgiServer, parse_address

log = logging.getLogger("packetflow.mcp")

# Tools besides the intents' (default: ``propose_intent`` with the configured provider).
Extras = Callable[[Host], Sequence[Extra]]


def default_extras(host: Host) -> list[Extra]:
    return [propose_tool(host)]


class McpMount:
    """``HttpService(address, mounts=[McpMount()])``: the MCP app at ``/mcp``."""

    def __init__(self, extras: Extras = default_extras) -> None:
        self.extras = extras
        self.app: McpApp | None = None
        self._resources = contextlib.AsyncExitStack()

    async def start(self, view: WorkerView, transport: Transport, host: str) -> list[BaseRoute]:
        resources = self._resources
        client = Client(transport, view.topology, requester=f"mcp-{view.instance_id}")
        await client.start()
        resources.push_async_callback(client.stop)
        served = in_worker(view, client)
        resources.push_async_callback(served.close)
        app = self.app = McpApp(served, extras=self.extras(served))
        manager = app.session_manager(host)
        await resources.enter_async_context(manager.run())
        return list(app.http_routes(manager))

    async def stop(self) -> None:
        await self._resources.aclose()


async def serve(
    topology: Topology,
    broker: str | Transport,
    *,
    token: str | None = None,
    http: str | None = None,
    extras: Extras = default_extras,
    ready: Callable[[str], Any] | None = None,
) -> None:
    """Serve ``topology``'s MCP app until stopped: over stdio (``http`` None: the caller is
    whoever holds ``token``) or Streamable HTTP on ``http`` (``host:port``; each caller
    sends its own bearer token). ``ready`` gets the URL once HTTP listens."""
    transport = broker if isinstance(broker, Transport) else open_transport(broker)
    quiet_aiokafka()  # its repeated warnings rate-limited, as a worker's are
    gate = Gate(transport, topology)
    if token is not None:  # a token that cannot hold is refused before connecting
        denial = authorize_way_in(gate.guard, (), Context.new(token=token), "mcp")
        if denial is not None:
            raise ValueError(f"the token does not hold: {denial.reason}: {denial.message}")
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(gate)
        client = await stack.enter_async_context(Client(transport, topology))
        served = standalone(topology, client, gate)
        stack.push_async_callback(served.close)
        app = McpApp(served, token=token, extras=extras(served))
        if http is None:
            async with stdio_server() as (read, write):
                await app.server.run(read, write, app.server.create_initialization_options())
            return
        host, port = parse_address(http)
        manager = app.session_manager(host)
        await stack.enter_async_context(manager.run())
        server = AsgiServer(Starlette(routes=app.http_routes(manager)), host, port)
        await server.start()
        stack.push_async_callback(server.stop)
        url = f"http://{host}:{server.port}/mcp"
        log.info("serving MCP for %s on %s", topology.name, url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
            stack.callback(loop.remove_signal_handler, sig)
        if ready is not None:
            ready(url)
        await stop.wait()
