"""The HTTP server as a worker service: uvicorn serving the worker's app inside the worker's
own event loop, started once the worker runs and stopped before it lets go of anything.
It advertises its address on the members topic, so other workers forward state queries to
it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Protocol

from starlette.routing import BaseRoute

from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.transport import Transport
from packetflow.observability.server import AsgiServer, parse_address
from packetflow.web.app import WebApp

log = logging.getLogger("packetflow.web")


class Mounted(Protocol):
    """Routes another interface serves from this server (MCP's ``/mcp``): started with the
    worker, before the server listens; stopped after it has closed."""

    async def start(self, view: WorkerView, transport: Transport, host: str) -> list[BaseRoute]:
        """The routes to serve (``host``: the interface the server binds)."""
        ...

    async def stop(self) -> None: ...


class HttpService:
    """``Worker(..., services=[HttpService("127.0.0.1:8080")])``: what ``--http`` adds;
    ``mounts``: other interfaces' routes on the same server."""

    def __init__(self, address: str, *, mounts: Sequence[Mounted] = ()) -> None:
        self.host, self.port = parse_address(address)
        self.mounts = list(mounts)
        self.web: WebApp | None = None
        self._server: AsgiServer | None = None
        self._mounted = contextlib.AsyncExitStack()

    @property
    def address(self) -> str:
        """Where it listens (the port it got, when it asked for 0)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def start(self, view: WorkerView, transport: Transport) -> None:
        try:
            await self._start(view, transport)
        except BaseException:  # the port taken, say: what started is let go again
            with contextlib.suppress(Exception):
                await self.stop()
            raise
        view.advertise(http=self.address)
        log.info("serving HTTP on %s", self.url)

    async def _start(self, view: WorkerView, transport: Transport) -> None:
        extra: list[BaseRoute] = []
        for mount in self.mounts:
            self._mounted.push_async_callback(mount.stop)
            extra += await mount.start(view, transport, self.host)
        web = self.web = WebApp(view, transport, extra_routes=extra)
        await web.start()
        server = self._server = AsgiServer(web.app, self.host, self.port)
        await server.start()
        self.port = server.port

    async def stop(self) -> None:
        if self.web is not None:
            await self.web.hubs.stop()  # ends the live streams, so the server can close
        if self._server is not None:
            await self._server.stop()
        if self.web is not None:
            await self.web.stop()
        await self._mounted.aclose()
