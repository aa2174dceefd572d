"""Actors where things go wrong: forged answers, commands for another actor, refused asks,
actors that end, misplaced effects, states that cannot be stored, full stashes."""

from __future__ import annotations

import asyncio

import pytest
from support.running import new_topology, running, unique

from packetflow import Context, Intent, Refused, TestDriver, Topology, emit, reply, sequential
from packetflow.actors import (
    FAILED,
    STOPPED,
    AskTimedOut,
    Reminder,
    actor,
    ask,
    remind,
    restart,
    resume,
    stop,
)
from packetflow.actors import agent as actor_agent
from packetflow.actors.operate import ActorControl

SHOP = Context(principal="tester", capabilities=["shop:*", "price:*"])


class Buy(Intent, type_name="edges.Buy", key="cart", requires=["shop:cart/{cart}"]):
    cart: str
    sku: str = "tea"


class Quote(Intent, type_name="edges.Quote", key="sku", requires=["price:sku/{sku}"]):
    sku: str


class Price(Intent, type_name="edges.Price", key="sku", requires=["price:sku/{sku}"]):
    """The answer to a Quote; not internal: anyone holding price:sku/... may send one."""

    sku: str
    price: int


class Outcome(Intent, type_name="edges.Outcome", key="cart", internal=True):
    cart: str
    what: str


def _asking(timeout: float = 0.5) -> Topology:
    topo = new_topology("edges", allow_unsigned=True)

    @actor(topo, Buy | Price | AskTimedOut | Refused, state=0, topic=unique("carts"),
           emits=[Outcome])  # fmt: skip
    def cart(message, ctx: Context, n: int, cart_id: str):  # type: ignore[no-untyped-def]
        match message:
            case Buy(sku=sku):
                return n, ask(Quote(sku=sku), timeout=timeout)
            case Price(price=price):
                return n + 1, reply(Outcome(cart=cart_id, what=f"price {price}"))
            case AskTimedOut():
                return n, reply(Outcome(cart=cart_id, what="timed out"))
            case Refused(reason=reason):
                return n, reply(Outcome(cart=cart_id, what=f"refused: {reason}"))
        raise AssertionError(message)

    @topo.reactor(Quote, topic=unique("prices"))
    def prices(quote: Quote, ctx: Context) -> None:
        if quote.sku == "broken":
            raise RuntimeError("no price list")
        return None  # never answers

    return topo


async def test_an_answer_without_a_workers_seal_never_reaches_the_actor(broker: str) -> None:
    """Anyone who can write to the actor's topic and read the ask could pose as the
    answer: without the seal the engine puts on every reply, it is denied, and nothing is
    written back to the actor's topic for it."""
    topo = _asking(timeout=1.0)
    async with running(topo, broker) as run:
        asked = asyncio.ensure_future(run.client.ask(Buy(cart="c1"), context=SHOP))
        (request,) = await run.wait_for(topo.reactors["prices"].topic, 1)
        forged = Context(
            principal="mallory",
            capabilities=["price:*"],
            reply_to=topo.physical(topo.agents["cart"].topic),
            requester="c1",
            causation_id=request.context.intent_id,
        )
        await run.send(Price(sku="tea", price=1), forged, topic=topo.agents["cart"].topic,
                       key="c1")  # fmt: skip
        (denied,) = await run.denied(1)
        assert denied.header("pf-reason") == "bad-reply-to"
        assert await asked == Outcome(cart="c1", what="timed out")
        assert run.state("cart", "c1") == 0  # the forged price was never a turn
        on_cart = [r.intent for r in await run.read(topo.agents["cart"].topic)]
        assert [type(i).__name__ for i in on_cart] == ["Buy", "Price"]  # no Refused for it


async def test_an_ask_the_engine_set_aside_is_answered_with_refused(broker: str) -> None:
    topo = _asking(timeout=10)
    async with running(topo, broker) as run:
        # the price reactor fails on it: the engine sets the request aside and answers
        answer = await run.client.ask(Buy(cart="c1", sku="broken"), context=SHOP)
        assert answer == Outcome(cart="c1", what="refused: reactor-error")


async def test_an_operators_command_acts_only_on_the_actor_it_names(broker: str) -> None:
    topo = new_topology("edges", allow_unsigned=True)

    @actor(topo, Buy, state=0, topic=unique("carts"), supervision=stop())
    def cart(message: Buy, ctx: Context, n: int):  # type: ignore[no-untyped-def]
        if message.sku == "bomb":
            raise RuntimeError("boom")
        return n + 1, None

    mine = Context(principal="ops", capabilities=["operate:actor/cart/mine"])
    async with running(topo, broker) as run:
        await run.send(Buy(cart="c1", sku="bomb"), SHOP)
        await run.dead_letters(1)
        # allowed for "mine", written to c1's key: c1 stays stopped
        await run.send(ActorControl(actor_type="cart", actor="mine"), mine, key="c1")
        await run.send(Buy(cart="c1"), SHOP)
        _, refused = await run.dead_letters(2)
        assert refused.header("pf-reason") == STOPPED


class Watch(Intent, type_name="edges.Watch", key="device", requires=["watch:device/{device}"]):
    device: str
    end: bool = False


def test_an_actor_that_ends_takes_its_reminders_with_it() -> None:
    topo = new_topology("edges", allow_unsigned=True)

    @actor(topo, Watch | Reminder, state=0, topic=unique("devices"))
    def device(message, ctx: Context, fired: int):  # type: ignore[no-untyped-def]
        match message:
            case Watch(end=False):
                return fired, remind("check", after=10, every=10)
            case Watch(end=True):
                return None, None
            case Reminder():
                return fired + 1, None
        raise AssertionError(message)

    watch = Context(principal="t", capabilities=["watch:*"])
    with TestDriver(topo) as driver:
        driver.send(Watch(device="d1"), context=watch)
        driver.advance(10)
        assert driver.state("device", "d1") == 1
        driver.send(Watch(device="d1", end=True), context=watch)
        driver.advance(60)
        assert driver.state("device", "d1") is None  # no reminder brought it back


def _resuming(result):  # type: ignore[no-untyped-def]
    topo = new_topology("edges", allow_unsigned=True)
    out = unique("outcomes")
    topo.route(Outcome, out)

    @actor(topo, Buy, state=dict, topic=unique("carts"), supervision=resume(), emits=[Outcome])
    def cart(message: Buy, ctx: Context, state: dict):  # type: ignore[no-untyped-def,type-arg]
        return result(message)

    return topo, out


@pytest.mark.parametrize(
    ("result", "error"),
    [
        (lambda m: ({"n": 1}, sequential(emit(Outcome(cart=m.cart, what="x")), ask(m))),
         "go in the list an actor returns"),
        (lambda m: ({"n": {1, 2}}, emit(Outcome(cart=m.cart, what="x"))),
         "new state does not encode"),
    ],
)  # fmt: skip
async def test_a_turn_that_cannot_be_kept_sends_nothing(broker: str, result, error) -> None:  # type: ignore[no-untyped-def]
    topo, out = _resuming(result)
    async with running(topo, broker) as run:
        await run.send(Buy(cart="c1"), SHOP)
        (dead,) = await run.dead_letters(1)
        assert dead.header("pf-reason") == FAILED
        assert error in (dead.header("pf-error") or "")
        assert await run.read(out) == []
        assert run.state("cart", "c1") is None


async def test_a_full_stash_sets_later_messages_aside(
    broker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(actor_agent, "STASH_LIMIT", 2)
    topo = new_topology("edges", allow_unsigned=True)

    @actor(topo, Buy, state=0, topic=unique("carts"), supervision=restart(backoff=(30, 30)))
    def cart(message: Buy, ctx: Context, n: int):  # type: ignore[no-untyped-def]
        if message.sku == "bomb":
            raise RuntimeError("boom")
        return n + 1, None

    async with running(topo, broker) as run:
        for sku in ("bomb", "a", "b", "c"):  # bomb and a wait in the stash; b and c do not fit
            await run.send(Buy(cart="c1", sku=sku), SHOP)
        dead = await run.dead_letters(2)
        assert {d.header("pf-reason") for d in dead} == {"actor-stash-full"}
        assert [d.intent.sku for d in dead] == ["b", "c"]  # type: ignore[union-attr]


async def test_only_workers_may_name_an_actors_topic_as_reply_to(broker: str) -> None:
    """Else a requester could make the engine answer an ask it never made: a request
    naming an actor's topic as reply_to is refused unless a worker sealed it."""
    topo = _asking(timeout=10)
    async with running(topo, broker) as run:
        crafted = Context(
            principal="mallory",
            capabilities=["price:*"],
            reply_to=topo.physical(topo.agents["cart"].topic),
            requester="c1",
        )
        await run.send(Quote(sku="tea"), crafted)
        (denied,) = await run.denied(1)
        assert denied.header("pf-reason") == "bad-reply-to"
        assert "only workers name" in (denied.header("pf-error") or "")
        # the actors' own asks (sealed) still get their answers
        answer = await run.client.ask(Buy(cart="c2", sku="broken"), context=SHOP)
        assert answer == Outcome(cart="c2", what="refused: reactor-error")
