"""A worker running in the background of a test, with a client, on one broker URL.

Shared by the behaviour tests (tests/behaviour) and the stream tests; the ``broker`` fixture
in conftest.py gives them the URL (a fresh ``memory://`` broker, or the session's real Kafka).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from packetflow import Client, Context, Delivery, Intent, Received, Topology, Worker

WAIT = 10.0  # upper bound of every wait; a passing test returns long before


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def new_topology(prefix: str, **kwargs: Any) -> Topology:
    """A topology with a unique name (and so a unique group), 2 partitions, no namespace."""
    kwargs.setdefault("partitions", 2)
    return Topology(unique(prefix), namespace="", **kwargs)


@dataclass
class Running:
    """A worker running in the background plus a client, on one broker."""

    topology: Topology
    worker: Worker
    client: Client

    async def send(self, intent: Intent, context: Context | None = None, **kw: Any) -> Delivery:
        return await self.client.send(intent, context=context, **kw)

    async def idle(self) -> None:
        await self.worker.wait_idle(WAIT)

    async def read(self, topic: str) -> list[Received]:
        return await self.client.read(topic)

    async def wait_for(self, topic: str, count: int) -> list[Received]:
        """Exactly ``count`` records on ``topic`` once the worker is idle."""
        await self.client.wait_for(topic, count, timeout=WAIT)
        await self.idle()
        received = await self.client.read(topic)
        assert len(received) == count, [
            (r.intent or r.record.value, r.header("pf-reason")) for r in received
        ]
        return received

    async def dead_letters(self, count: int) -> list[Received]:
        return await self.wait_for(self.topology.dead_letter_topic, count)

    async def denied(self, count: int) -> list[Received]:
        return await self.wait_for(self.topology.denied_topic, count)

    def state(self, reactor: str, key: str) -> Any:
        return self.worker.state(reactor, key)


@asynccontextmanager
async def running(topology: Topology, url: str, **options: Any) -> AsyncIterator[Running]:
    """``options``: more of Worker's arguments (``state_dir``, say)."""
    async with Worker(topology, url, poll_timeout=0.05, **options) as worker:
        task = asyncio.create_task(worker.run())
        try:
            async with Client(url, topology) as client:
                yield Running(topology, worker, client)
        finally:
            worker.request_stop()
            await asyncio.wait_for(task, WAIT)
