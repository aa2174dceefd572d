"""A shop on actors: carts that check out by asking a warehouse and a payment service,
payments supervised with restart and backoff, reminders for abandoned carts, and a router
over a pool of packers.

Run it:  packetflow worker topologies.shop              (broker: $PACKETFLOW_BROKER or memory://)
Demo:    packetflow demo topologies.shop [--count N]    (embedded broker, generated traffic)
Inspect: packetflow actors list topologies.shop --broker kafka://...

A cart (actor ``cart``, by cart id) collects items; each ``AddItem`` sets its ``abandoned``
reminder again. ``Checkout`` asks the ``warehouse`` (by warehouse id) to reserve the items;
once reserved it asks ``payments`` (by cart id) to charge; once charged it emits
``CheckedOut`` and a ``Pack`` to one of three packers (round robin), and ends. The payment
service fails now and then (every fifth cart's first attempt): ``restart`` tries again after
a backoff while that cart's later messages wait. Shoppers hold ``shopper:cart/*`` tokens.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterator

from pydantic import BaseModel

from packetflow import Context, Intent, Issuer, Refused, Topology, emit, reply
from packetflow.actors import AskTimedOut, Reminder, actor, ask, forget, remind, restart, router

topology = Topology("shop", capabilities={"shopper": ["add", "checkout"]})
ABANDON_AFTER = 1800.0  # seconds without an item added before a cart counts as abandoned
PRICES = {"tea": 4, "cake": 6, "jam": 5, "bread": 3, "honey": 9}


class AddItem(Intent, type_name="shop.AddItem", key="cart", requires=["add:cart/{cart}"]):
    cart: str
    sku: str


class Checkout(Intent, type_name="shop.Checkout", key="cart", requires=["checkout:cart/{cart}"]):
    cart: str


class Reserve(Intent, type_name="shop.Reserve", key="warehouse", internal=True):
    warehouse: str
    skus: list[str]


class Reserved(Intent, type_name="shop.Reserved", key="warehouse", internal=True):
    warehouse: str
    ok: bool


class Charge(Intent, type_name="shop.Charge", key="cart", internal=True):
    cart: str
    amount: int


class Charged(Intent, type_name="shop.Charged", key="cart", internal=True):
    cart: str
    amount: int


class Pack(Intent, type_name="shop.Pack", key="cart", internal=True):
    cart: str
    items: list[str]


class CheckedOut(Intent, type_name="shop.CheckedOut", key="cart", internal=True):
    cart: str
    items: list[str]
    amount: int


class Abandoned(Intent, type_name="shop.Abandoned", key="cart", internal=True):
    cart: str
    items: list[str]


class CheckoutFailed(Intent, type_name="shop.CheckoutFailed", key="cart", internal=True):
    cart: str
    why: str


topology.route(CheckedOut, "checkouts")
topology.route(CheckoutFailed, "checkouts")
topology.route(Abandoned, "abandoned")


class Cart(BaseModel):
    items: list[str] = []
    stage: str = "shopping"  # shopping, reserving, paying


class Stock(BaseModel):
    left: dict[str, int] = {sku: 1_000 for sku in PRICES}


@actor(topology, Reserve, state=Stock, topic="warehouses", emits=[Reserved])
def warehouse(message: Reserve, ctx: Context, stock: Stock):  # type: ignore[no-untyped-def]
    """Reserves a cart's items if every one is in stock."""
    left = dict(stock.left)
    for sku in message.skus:
        left[sku] = left.get(sku, 0) - 1
    if min(left.values(), default=0) < 0:
        return stock, reply(Reserved(warehouse=message.warehouse, ok=False))
    return Stock(left=left), reply(Reserved(warehouse=message.warehouse, ok=True))


_charged_once: set[str] = set()  # the flaky payment service: carts it failed once


@actor(topology, Charge, state=0, topic="payments", emits=[Charged],
       supervision=restart(max_restarts=3, within=60, backoff=(0.2, 5)))  # fmt: skip
def payments(message: Charge, ctx: Context, charged: int):  # type: ignore[no-untyped-def]
    """Charges a cart; the provider fails every fifth cart's first attempt."""
    if zlib.crc32(message.cart.encode()) % 5 == 0 and message.cart not in _charged_once:
        _charged_once.add(message.cart)
        raise ConnectionError("payment provider timed out")
    return charged + message.amount, reply(Charged(cart=message.cart, amount=message.amount))


@actor(topology, Pack, state=0, topic="packers")
def packer(message: Pack, ctx: Context, packed: int):  # type: ignore[no-untyped-def]
    """Packs what it is given: how many orders each packer packed."""
    return packed + 1, None


packers = router(topology, "packers", "packer", members=["p1", "p2", "p3"], by="round_robin")


@actor(topology, AddItem | Checkout | Reserved | Charged | AskTimedOut | Refused | Reminder,
       state=Cart, topic="carts", emits=[CheckedOut, CheckoutFailed, Abandoned, Pack])  # fmt: skip
def cart(message, ctx: Context, cart: Cart, cart_id: str):  # type: ignore[no-untyped-def]
    """A shopping cart: reserves, pays, has its order packed, or is abandoned."""
    match message:
        case AddItem(sku=sku) if cart.stage == "shopping":
            items = [*cart.items, sku]
            return Cart(items=items), remind("abandoned", after=ABANDON_AFTER)
        case Checkout() if cart.stage == "shopping" and cart.items:
            reserve = ask(Reserve(warehouse="main", skus=cart.items), timeout=10)
            return Cart(items=cart.items, stage="reserving"), reserve
        case Reserved(ok=True) if cart.stage == "reserving":
            amount = sum(PRICES.get(sku, 0) for sku in cart.items)
            pay = ask(Charge(cart=cart_id, amount=amount), timeout=30)
            return Cart(items=cart.items, stage="paying"), pay
        case Charged(amount=amount) if cart.stage == "paying":
            done = CheckedOut(cart=cart_id, items=cart.items, amount=amount)
            pack = packers.tell(Pack(cart=cart_id, items=cart.items))
            return None, [emit(done), pack, forget("abandoned")]
        case Reserved(ok=False) | AskTimedOut() | Refused():
            why = type(message).__name__ if not isinstance(message, Reserved) else "out of stock"
            failed = CheckoutFailed(cart=cart_id, why=why)
            return Cart(items=cart.items), [emit(failed)]  # back to shopping
        case Reminder(name="abandoned") if cart.stage == "shopping":
            return None, emit(Abandoned(cart=cart_id, items=cart.items))
    return cart, None  # anything else (an item added mid-checkout): ignored


TOKENS = ("add:cart/*", "checkout:cart/*")
DEMO_STATE = {"packer": "orders packed"}  # what packetflow demo shows after the run


def generate_traffic(
    count: int, *, issuer: Issuer, carts: int = 200, seed: int = 11
) -> Iterator[tuple[Intent, Context]]:
    """Shoppers fill carts; about half of them check out."""
    rng = random.Random(seed)
    token = issuer.issue("shopper-1", list(TOKENS), ttl="8h")
    names = [f"cart-{i:04d}" for i in range(carts)]
    for n in range(count):
        name = rng.choice(names)
        intent: Intent = (
            Checkout(cart=name) if n % 8 == 7 and rng.random() < 0.5
            else AddItem(cart=name, sku=rng.choice(list(PRICES)))
        )  # fmt: skip
        yield intent, Context.new("shopper-1", token=token)


if __name__ == "__main__":
    from packetflow.cli.demo import demo_main

    demo_main(topology, generate_traffic, show_state=DEMO_STATE)
