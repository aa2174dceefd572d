"""The topology the actor process tests run as ``packetflow worker tests/support/actorproc.py``.

Orders ask the stock actor of their item for a reservation (an ask inside an actor, answered
later as a message); each answer becomes a ``Done`` on the ``done`` topic, carrying the
order's ``seq``, and every order sets its order's reminder, which fires once a while later
as a ``Reminded``. Exactly-once: the tests check each seq's Done once, every stock count as
in a run without crashes, and each order's last reminder fired once.
"""

from __future__ import annotations

import os

from packetflow import Context, Intent, Topology, emit, reply
from packetflow.actors import AskTimedOut, Reminder, actor, ask, remind

topology = Topology(
    "actorproc",
    allow_unsigned=True,  # the test inputs carry plain capabilities
    processing_guarantee=os.environ.get("PF_TEST_GUARANTEE", "exactly_once"),
)
REMIND_AFTER = float(os.environ.get("PF_TEST_REMIND_AFTER", "3"))


class Order(Intent, type_name="actorproc.Order", key="order", requires=["shop:order/{order}"]):
    order: str
    seq: int
    sku: str


class Reserve(Intent, type_name="actorproc.Reserve", key="sku", internal=True):
    sku: str
    seq: int


class Reserved(Intent, type_name="actorproc.Reserved", key="sku", internal=True):
    sku: str
    seq: int
    count: int


class Done(Intent, type_name="actorproc.Done", key="order", internal=True):
    order: str
    seq: int
    count: int  # the stock's reservations so far; -1: the ask timed out


class Count(Intent, type_name="actorproc.Count", key="sku", requires=["shop:stock/{sku}"]):
    """How many reservations a stock actor made (answered with a Reserved, seq -1)."""

    sku: str


class Reminded(Intent, type_name="actorproc.Reminded", key="order", internal=True):
    order: str
    last_seq: int


topology.route(Done, "done")
topology.route(Reminded, "reminded")


@actor(topology, Order | Reserved | AskTimedOut | Reminder, state=int, topic="orders",
       emits=[Done, Reminded])  # fmt: skip
def order(message, ctx: Context, last_seq: int, order_id: str):  # type: ignore[no-untyped-def]
    match message:
        case Order(seq=seq, sku=sku):
            reserve = ask(Reserve(sku=sku, seq=seq), timeout=60)
            return seq, [reserve, remind("check", after=REMIND_AFTER)]
        case Reserved(seq=seq, count=count):
            return last_seq, emit(Done(order=order_id, seq=seq, count=count))
        case AskTimedOut():
            return last_seq, emit(Done(order=order_id, seq=-1, count=-1))
        case Reminder():
            return last_seq, emit(Reminded(order=order_id, last_seq=last_seq))
    return last_seq, None


@actor(topology, Reserve | Count, state=int, topic="stock", emits=[Reserved])
def stock(message: Reserve | Count, ctx: Context, count: int):  # type: ignore[no-untyped-def]
    if isinstance(message, Count):
        return count, reply(Reserved(sku=message.sku, seq=-1, count=count))
    return count + 1, reply(Reserved(sku=message.sku, seq=message.seq, count=count + 1))
