"""A small topology for the web tests: orders that are answered (``Placed``), orders that
fail in their reactor (qty 0: dead-lettered) and jobs nobody answers; declared routes; a
keyed count as state."""

from __future__ import annotations

from typing import Any

from support.running import new_topology, unique

from packetflow import Context, Intent, KeyPair, Security, Topology, reply
from packetflow import web

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
