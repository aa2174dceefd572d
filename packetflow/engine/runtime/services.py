"""Worker services: what lives in a worker's lifecycle without consuming a topic.

The HTTP server, the MCP server and a metrics exporter are services: a worker started with
``Worker(..., services=[...])`` starts each once it runs (its revocations and followed tables
read, its consumer in the group) with a read-only view of the worker and its transport (to
publish through a :class:`~packetflow.engine.client.Client` of its own), and stops them
first when it stops, before it commits and lets go of its partitions. Like Starlette's
lifespan: one place where a component's startup and shutdown live.
"""

from __future__ import annotations

from typing import Protocol

from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.transport import Transport


class WorkerService(Protocol):
    """Started with the worker (``view``: what it holds; ``transport``: its broker), stopped
    before it stops. ``start`` should return once serving; ``stop`` is called once."""

    async def start(self, view: WorkerView, transport: Transport) -> None: ...

    async def stop(self) -> None: ...
