"""The HTTP server as a worker service: uvicorn serving the worker's app inside the worker's
own event loop, started once the worker runs and stopped before it lets go of anything.
It advertises its address on the members topic, so other workers forward state queries to
it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator

import uvicorn

from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.transport import Transport
from packetflow.web.app import WebApp

log = logging.getLogger("packetflow.web")


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (port 0: any free one)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--http {address!r}: give host:port, e.g. 127.0.0.1:8080")
    return host, int(port)


class _Server(uvicorn.Server):
    """Leaves the signals to the worker (it stops its services on SIGTERM itself)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpService:
    """``Worker(..., services=[HttpService("127.0.0.1:8080")])``: what ``--http`` adds."""

    def __init__(self, address: str) -> None:
        self.host, self.port = parse_address(address)
        self.web: WebApp | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        """Where it listens (the port it got, when it asked for 0)."""
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    async def start(self, view: WorkerView, transport: Transport) -> None:
        web = self.web = WebApp(view, transport)
        await web.start()
        config = uvicorn.Config(
            web.app, host=self.host, port=self.port, lifespan="off", log_level="warning",
            access_log=False, ws="websockets-sansio",
        )  # fmt: skip
        server = self._server = _Server(config)
        self._task = asyncio.create_task(server.serve(), name="http")
        while not server.started:
            if self._task.done():
                await self._task  # it failed to bind: say why
                raise RuntimeError(f"the HTTP server did not start on {self.address}")
            await asyncio.sleep(0.01)
        sockets = [s for srv in server.servers for s in srv.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]
        view.advertise(http=self.address)
        log.info("serving HTTP on %s", self.url)

    async def stop(self) -> None:
        server, task = self._server, self._task
        if server is not None and task is not None:
            server.should_exit = True
            if self.web is not None:
                await self.web.hubs.stop()  # ends the live streams, so the server can close
            try:
                await asyncio.wait_for(task, 10.0)
            except TimeoutError:
                server.force_exit = True
                await task
        if self.web is not None:
            await self.web.stop()
