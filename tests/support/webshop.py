"""A small topology for the web tests: orders that are answered (``Placed``), orders that
fail in their reactor (qty 0: dead-lettered) and jobs nobody answers; declared routes; a
keyed count as state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from packetflow import Context, Intent, KeyPair, Security, Topology, reply, web
from packetflow.web import HttpService
from support.running import Running, new_topology, running, unique

KEY = KeyPair.generate("web-tests")
SECRET = bytes(range(7, 39))


class Order(Intent, type_name="shop.Order", key="customer", requires=["order:customer/{customer}"]):
    """Order an item for a customer."""

    customer: str
    item: str
    qty: int = 1


class Job(Intent, type_name="shop.Job", key="customer", requires=["order:customer/{customer}"]):
    """Work nobody answers."""

    customer: str


class Placed(Intent, type_name="shop.Placed", key="customer", internal=True):
    customer: str
    orders: int


def shop(**options: Any) -> Topology:
    topo = new_topology(
        "shop", security=Security(trusted_keys=[KEY], worker_secret=SECRET), **options
    )

    @topo.reactor(Order, topic=unique("orders"), state=int, emits=[Placed])
    def orders(order: Order, ctx: Context, count: int) -> tuple[int, Any]:
        if order.qty <= 0:
            raise ValueError("qty must be positive")
        placed = Placed(customer=order.customer, orders=count + 1)
        return count + 1, (reply(placed) if ctx.reply_to else None)  # answered when asked

    @topo.reactor(Job, topic=unique("jobs"))
    def jobs(job: Job, ctx: Context) -> None:
        return None

    web.post(topo, "/customers/{customer}/orders", Order)
    return topo


@dataclass
class Served:
    run: Running
    http: httpx.AsyncClient
    service: HttpService


@asynccontextmanager
async def served(broker: str, **options: Any) -> AsyncIterator[Served]:
    """The shop on ``broker`` with its HTTP server on a free port, and a client of it."""
    service = HttpService("127.0.0.1:0")
    async with running(shop(**options), broker, services=[service]) as run:  # noqa: SIM117
        # (its port is known once the worker runs)
        async with httpx.AsyncClient(base_url=service.url, timeout=20.0) as http:
            yield Served(run, http, service)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
