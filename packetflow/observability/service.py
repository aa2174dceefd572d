"""``--metrics host:port``: a worker service serving only ``/metrics`` and health, for a
worker without ``--http`` (which serves them itself)."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.transport import Transport
from packetflow.observability.endpoints import routes as observability_routes
from packetflow.observability.server import AsgiServer, parse_address

log = logging.getLogger("packetflow.observability")


class MetricsService:
    """``Worker(..., services=[MetricsService("127.0.0.1:9464")])``."""

    def __init__(self, address: str) -> None:
        self.host, self.port = parse_address(address, "--metrics")
        self._server: AsgiServer | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self, view: WorkerView, transport: Transport) -> None:
        server = self._server = AsgiServer(
            Starlette(routes=observability_routes(view)), self.host, self.port
        )
        await server.start()
        self.port = server.port
        view.advertise(metrics=f"{self.host}:{self.port}")
        log.info("serving metrics on %s/metrics", self.url)

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
