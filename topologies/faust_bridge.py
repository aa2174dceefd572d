"""A legacy Faust app and the PacketFlow topology it is moving to, exchanging intents.

The Faust app (``app``) still takes orders as faust Records on its own topic
``legacy-orders``; its agent ``forward_orders`` publishes each as a PacketFlow ``PlaceOrder``,
signed by the app's capability token (``$BRIDGE_TOKEN``; without a valid one the workers
deny it). The reactor ``place_order`` keeps each customer's total and emits
``OrderAccepted``, which the agent ``confirm`` reads as typed intents with their context and
turns into the legacy ``Confirmation`` records the app's old consumers read (``notify`` is
one), carrying the trace the order started. One module holds both sides: ``packetflow
worker`` finds ``topology``, ``faust -A`` finds ``app``. Both name their topics and groups
in ``$PACKETFLOW_NAMESPACE`` when it is set.

Run it (a broker from ``packetflow kafka start``, a key from ``packetflow caps keygen``)::

    export PACKETFLOW_BROKER=kafka://127.0.0.1:9092
    packetflow worker topologies.faust_bridge &     # creates the topology's topics: first
    export BRIDGE_TOKEN=$(packetflow caps issue --holder legacy-shop \\
        --grant 'clerk:customer/*' --ttl 1h)
    faust -A topologies.faust_bridge worker -l info --without-web
"""

from __future__ import annotations

import logging
import os

import faust
from pydantic import Field

from packetflow import Context, Intent, Topology
from packetflow.interop.faust import context_of, intent_topic, send_intent

TOKEN_VARIABLE = "BRIDGE_TOKEN"
log = logging.getLogger("topologies.faust_bridge")

# -- the PacketFlow side -----------------------------------------------------------------

topology = Topology("bridge", capabilities={"clerk": ["order"]})


class PlaceOrder(
    Intent, type_name="bridge.PlaceOrder", key="customer", requires=["order:customer/{customer}"]
):
    order_id: str
    customer: str
    amount: int = Field(gt=0)


class OrderAccepted(Intent, type_name="bridge.OrderAccepted", key="customer"):
    order_id: str
    customer: str
    total_spent: int


topology.route(OrderAccepted, "accepted")


@topology.reactor(PlaceOrder, topic="orders", state=int)
def place_order(order: PlaceOrder, ctx: Context, spent: int) -> tuple[int, list[Intent]]:
    """A customer's running total; every order is accepted with it."""
    spent += order.amount
    accepted = OrderAccepted(order_id=order.order_id, customer=order.customer, total_spent=spent)
    return spent, [accepted]


# -- the Faust side ----------------------------------------------------------------------


class LegacyOrder(faust.Record):
    """An order as the Faust app has always taken it."""

    order_id: str
    customer: str
    amount: int


class Confirmation(faust.Record):
    """What the app's old consumers read, now made from the topology's ``OrderAccepted``."""

    order_id: str
    customer: str
    total_spent: int
    trace_id: str  # the trace the order started as it left the Faust app
    caused_by: str  # the id of the PlaceOrder intent it answers


app = faust.App(
    topology.physical("legacy-shop"),  # the consumer group, namespaced like the topology's
    broker=os.environ.get("PACKETFLOW_BROKER", "kafka://127.0.0.1:9092").partition("?")[0],
    web_enabled=False,
)
# the app's own topics (internal: faust creates those its agents read); the topology's
# topics, which its workers create
legacy_orders = app.topic(
    topology.physical("legacy-orders"), value_type=LegacyOrder, internal=True, partitions=4
)
confirmations = app.topic(
    topology.physical("legacy-confirmations"), value_type=Confirmation, internal=True, partitions=4
)
orders = intent_topic(app, topology, PlaceOrder)
accepted_orders = intent_topic(app, topology, OrderAccepted)


@app.agent(legacy_orders)
async def forward_orders(stream: faust.StreamT[LegacyOrder]) -> None:
    """Each legacy order, as the PlaceOrder intent the topology's reactor takes."""
    async for order in stream:
        intent = PlaceOrder(order_id=order.order_id, customer=order.customer, amount=order.amount)
        await send_intent(orders, intent, token=os.environ.get(TOKEN_VARIABLE))


@app.agent(accepted_orders)
async def confirm(stream: faust.StreamT[OrderAccepted]) -> None:
    """Each accepted order, as the legacy Confirmation, with the trace it belongs to."""
    async for event in stream.events():
        accepted: OrderAccepted = event.value
        ctx = context_of(event)
        confirmation = Confirmation(
            order_id=accepted.order_id,
            customer=accepted.customer,
            total_spent=accepted.total_spent,
            trace_id=ctx.trace_id,
            caused_by=ctx.causation_id or "",
        )
        await confirmations.send(key=accepted.customer, value=confirmation)


@app.agent(confirmations)
async def notify(stream: faust.StreamT[Confirmation]) -> None:
    """One of the app's old consumers of confirmations, unchanged by the move."""
    async for confirmation in stream:
        log.info(
            "order %s of %s confirmed: %d spent in all (trace %s)",
            confirmation.order_id, confirmation.customer, confirmation.total_spent,
            confirmation.trace_id,
        )  # fmt: skip
