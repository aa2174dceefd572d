"""Health through a start and a rebalance: a worker joining a group is live at once, and not
ready, with the reason, while the partitions it takes are restored; ready after."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from support.running import WAIT, running
from support.webshop import KEY, Order, shop

from packetflow import Context, Worker, issue_token
from packetflow.engine.transport.memory import MemoryTransport, memory_broker
from packetflow.observability import MetricsService

ALICE = issue_token("alice", ["order:customer/*"], key=KEY, ttl=3600)


class GatedRestores(MemoryTransport):
    """A memory transport whose changelog reads (restores) wait for ``gate``."""

    def __init__(self, url: str, gate: asyncio.Event) -> None:
        super().__init__(url, broker=memory_broker(url.removeprefix("memory://")))
        self.gate = gate

    async def read_partitions(self, *args: Any, **kwargs: Any) -> Any:
        await self.gate.wait()
        return await super().read_partitions(*args, **kwargs)


async def _ready(http: httpx.AsyncClient) -> httpx.Response:
    return await http.get("/health/ready")


async def test_a_joining_worker_is_not_ready_until_it_has_restored() -> None:
    """On memory:// (its restores can be held at a gate); on Kafka the same moving of
    partitions is seen through state queries in processes/test_web_processes.py."""
    broker = f"memory://health-{uuid.uuid4().hex[:8]}"
    topology = shop()
    async with running(topology, broker) as first:
        for i in range(20):
            await first.client.send(Order(customer=f"c{i}", item="tea"),
                                    context=Context.new(token=ALICE))  # fmt: skip
        await first.idle()
        gate = asyncio.Event()
        service = MetricsService("127.0.0.1:0")
        second = Worker(topology, GatedRestores(broker, gate), poll_timeout=0.05,
                        services=[service])  # fmt: skip
        await second.start()
        task = asyncio.create_task(second.run())
        try:
            async with httpx.AsyncClient(base_url=service.url) as http:
                assert (await http.get("/health/live")).json()["live"] is True
                async with asyncio.timeout(WAIT):
                    while (answer := await _ready(http)).status_code != 503:
                        await asyncio.sleep(0.02)
                assert answer.headers["retry-after"] == "1"
                assert answer.json()["reason"].startswith("restoring ")
                gate.set()
                async with asyncio.timeout(WAIT):
                    while (answer := await _ready(http)).status_code != 200:
                        await asyncio.sleep(0.02)
                assert answer.json()["ready"] is True and answer.json()["partitions"] > 0
        finally:
            gate.set()
            second.request_stop()
            await asyncio.wait_for(task, WAIT)
            await second.stop()
