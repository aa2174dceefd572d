"""Operating actors on every transport: what the changelogs say about each actor (state,
status, asks, reminders), and starting a stopped actor again with an operator's command."""

from __future__ import annotations

from pydantic import BaseModel
from support.running import new_topology, running, unique

from packetflow import Context, Intent, Topology
from packetflow.actors import STOPPED, actor, ask, remind, stop
from packetflow.actors.operate import ActorControl, read_actors

SHOP = Context(principal="tester", capabilities=["shop:*"])
OPERATOR = Context(principal="ops", capabilities=["operate:actor/cart/*"])


class Add(Intent, type_name="ops.Add", key="cart", requires=["shop:cart/{cart}"]):
    cart: str
    sku: str


class Lookup(Intent, type_name="ops.Lookup", key="sku", internal=True):
    sku: str


class Cart(BaseModel):
    items: list[str] = []


def _shop() -> Topology:
    topo = new_topology("ops", allow_unsigned=True)

    @actor(topo, Add, state=Cart, topic=unique("carts"), supervision=stop())
    def cart(message: Add, ctx: Context, cart: Cart):  # type: ignore[no-untyped-def]
        if message.sku == "bomb":
            raise RuntimeError("boom")
        effects = [remind("abandoned", after=3600)]
        if message.sku == "rare":
            effects.append(ask(Lookup(sku="rare"), timeout=3600))  # nobody answers
        return Cart(items=[*cart.items, message.sku]), effects

    @actor(topo, Lookup, state=0, topic=unique("catalogue"))
    def catalogue(message: Lookup, ctx: Context, seen: int):  # type: ignore[no-untyped-def]
        return seen + 1, None

    return topo


async def test_the_changelogs_say_each_actors_state_status_asks_and_reminders(
    broker: str,
) -> None:
    topo = _shop()
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="tea"), SHOP)
        await run.send(Add(cart="c2", sku="rare"), SHOP)
        await run.send(Add(cart="c3", sku="bomb"), SHOP)
        await run.dead_letters(1)
        views = {v.actor: v for v in await read_actors(run.client.transport, topo, "cart")}
    assert sorted(views) == ["c1", "c2", "c3"]
    assert (views["c1"].state, views["c1"].status) == (Cart(items=["tea"]), "active")
    assert list(views["c1"].reminders) == ["abandoned"]
    assert views["c2"].asks == ["ops.Lookup"]
    assert (views["c3"].status, views["c3"].reason) == ("stopped", "RuntimeError: boom")
    assert views["c3"].as_dict()["state"] is None


async def test_an_operator_starts_a_stopped_actor_again(broker: str) -> None:
    topo = _shop()
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="bomb"), SHOP)
        await run.send(Add(cart="c1", sku="tea"), SHOP)
        _, stopped = await run.dead_letters(2)
        assert stopped.header("pf-reason") == STOPPED
        start = ActorControl(actor_type="cart", actor="c1")
        await run.send(start, Context(principal="eve", capabilities=[]))  # not an operator
        await run.denied(1)
        await run.send(start, OPERATOR, topic=topo.agents["cart"].topic)
        await run.send(Add(cart="c1", sku="cake"), SHOP)
        await run.idle()
        assert run.state("cart", "c1") == Cart(items=["cake"])
        (view,) = [v for v in await read_actors(run.client.transport, topo) if v.actor == "c1"]
        assert view.status == "active"
