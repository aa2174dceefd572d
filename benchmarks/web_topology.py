"""The topology ``python -m benchmarks.web`` runs as ``packetflow worker
benchmarks/web_topology.py --http ...``: orders counted per customer, and a feed topic the
SSE subscribers follow (both require a signed token: the path users take)."""

from __future__ import annotations

from packetflow import Context, Intent, Topology

topology = Topology("webbench", partitions=4)


class Order(Intent, type_name="webbench.Order", key="customer",
            requires=["order:customer/{customer}"]):  # fmt: skip
    customer: str
    n: int


class News(Intent, type_name="webbench.News", key="id", requires=["post:news/{id}"]):
    id: str
    sent: float  # epoch seconds: the subscribers measure delivery latency from it


@topology.reactor(Order, topic="orders", state=int)
def orders(order: Order, ctx: Context, count: int) -> tuple[int, None]:
    return count + 1, None


@topology.reactor(News, topic="news")
def news(item: News, ctx: Context) -> None:
    return None
