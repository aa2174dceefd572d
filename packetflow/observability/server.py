"""An ASGI application served by uvicorn inside the worker's own event loop: what the HTTP
server (``packetflow.web``) and the metrics server (``--metrics``) both run on. The signals
stay the worker's: it stops its services itself on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator
from typing import Any

import uvicorn


def parse_address(address: str, flag: str = "--http") -> tuple[str, int]:
    """``host:port`` (port 0: any free one)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"{flag} {address!r}: give host:port, e.g. 127.0.0.1:8080")
    return host, int(port)


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the worker's handlers stay

    async def serve(self, sockets: Any = None) -> None:
        try:
            await super().serve(sockets)
        except SystemExit:  # uvicorn exits the process when it cannot bind (it logged why)
            host, port = self.config.host, self.config.port
            raise OSError(f"cannot serve on {host}:{port}: the address is in use or not "
                          "this machine's") from None  # fmt: skip


class AsgiServer:
    """Serve ``app`` on ``host:port`` from this loop; ``start`` returns once listening."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.host, self.port = host, port
        config = uvicorn.Config(app, host=host, port=port, lifespan="off", log_level="warning",
                                access_log=False, ws="websockets-sansio")  # fmt: skip
        self._server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        server = self._server
        task = self._task = asyncio.create_task(server.serve(), name=f"asgi {self.address}")
        while not server.started:
            if task.done():
                await task  # it failed to bind: say why
                raise RuntimeError(f"the server did not start on {self.address}")
            await asyncio.sleep(0.01)
        sockets = [s for srv in server.servers for s in srv.sockets]
        if sockets:
            self.port = sockets[0].getsockname()[1]  # the one it got, when it asked for 0

    async def stop(self, timeout: float = 10.0) -> None:
        server, task = self._server, self._task
        if task is None:
            return
        if task.done():  # it never started (start said why) or has stopped
            if not task.cancelled():
                task.exception()
            return
        server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            server.force_exit = True
            await task
