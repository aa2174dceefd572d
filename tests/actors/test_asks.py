"""Asking from inside an actor, on every transport: the answer comes back as a message in
the context of the message that asked (so the asker can answer its own asker), a missing
answer becomes AskTimedOut, and a cycle of asks completes instead of deadlocking."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel
from support.running import new_topology, running, unique

from packetflow import Context, Intent, TestDriver, Topology, reply
from packetflow.actors import AskTimedOut, actor, ask

SHOP = Context(principal="tester", capabilities=["shop:*"])


class Checkout(Intent, type_name="asks.Checkout", key="cart", requires=["shop:cart/{cart}"]):
    cart: str
    sku: str


class Reserve(Intent, type_name="asks.Reserve", key="sku", internal=True):
    sku: str


class Reserved(Intent, type_name="asks.Reserved", key="sku", internal=True):
    sku: str
    left: int


class CheckedOut(Intent, type_name="asks.CheckedOut", key="cart", internal=True):
    cart: str
    outcome: str


class Basket(BaseModel):
    done: list[str] = []


class Stock(BaseModel):
    left: int = 2


def _shop(inventory_answers: bool = True, timeout: float = 5.0) -> Topology:
    topo = new_topology("asks", allow_unsigned=True)

    @actor(topo, Checkout | Reserved | AskTimedOut, state=Basket, topic=unique("carts"),
           emits=[CheckedOut])  # fmt: skip
    def cart(message: Checkout | Reserved | AskTimedOut, ctx: Context, basket: Basket):  # type: ignore[no-untyped-def]
        match message:
            case Checkout(sku=sku):
                return basket, ask(Reserve(sku=sku), timeout=timeout)
            case Reserved(sku=sku, left=left):
                # ctx is the Checkout's: the answer goes to whoever asked for the checkout
                cart_id = ctx.requester or "?"
                done = Basket(done=[*basket.done, sku])
                return done, reply(CheckedOut(cart=cart_id, outcome=f"{sku} reserved, {left} left"))
            case AskTimedOut(request=request, timeout=waited):
                late = f"{request}: no answer in {waited:g}s"
                return basket, reply(CheckedOut(cart="?", outcome=late))
        raise AssertionError(message)

    @actor(topo, Reserve, state=Stock, topic=unique("inventory"), emits=[Reserved])
    def inventory(message: Reserve, ctx: Context, stock: Stock):  # type: ignore[no-untyped-def]
        left = Stock(left=stock.left - 1)
        return left, reply(Reserved(sku=message.sku, left=left.left)) if inventory_answers else None

    return topo


async def test_an_actor_asks_another_and_answers_its_own_asker_with_the_result(
    broker: str,
) -> None:
    topo = _shop()
    async with running(topo, broker) as run:
        answer = await run.client.ask(Checkout(cart="c1", sku="apple"), context=SHOP)
        assert isinstance(answer, CheckedOut)
        assert answer.outcome == "apple reserved, 1 left"
        await run.idle()
        assert run.state("cart", "c1") == Basket(done=["apple"])
        assert run.state("inventory", "apple") == Stock(left=1)
        assert not await run.read(topo.dead_letter_topic)


async def test_an_ask_nobody_answers_comes_back_as_ask_timed_out(broker: str) -> None:
    topo = _shop(inventory_answers=False, timeout=0.3)
    async with running(topo, broker) as run:
        answer = await run.client.ask(Checkout(cart="c1", sku="pear"), context=SHOP)
        assert isinstance(answer, CheckedOut)
        assert answer.outcome == "asks.Reserve: no answer in 0.3s"
        assert run.state("cart", "c1") == Basket()  # nothing was reserved


class Question(Intent, type_name="asks.Question", key="to", internal=True):
    to: str
    asker: str
    depth: int


class Answer(Intent, type_name="asks.Answer", key="to", internal=True):
    to: str
    depth: int


class Start(Intent, type_name="asks.Start", key="to", requires=["shop:peer/{to}"]):
    to: str
    other: str


class Done(Intent, type_name="asks.Done", key="to", internal=True):
    to: str
    heard: int


async def test_a_cycle_of_asks_completes(broker: str) -> None:
    """a asks b, b (while answering a) asks a, a answers b, b answers a: no deadlock, since
    no ask blocks its partition (a and b may even share one)."""
    topo = new_topology("cycle", allow_unsigned=True)
    seen: list[str] = []

    @actor(topo, Start | Question | Answer | AskTimedOut, state=0, topic=unique("peers"),
           emits=[Answer, Done])  # fmt: skip
    def peer(message, ctx: Context, heard: int):  # type: ignore[no-untyped-def]
        match message:
            case Start(to=me, other=other):
                seen.append(f"{me} asks {other}")
                return heard, ask(Question(to=other, asker=me, depth=1), timeout=5)
            case Question(to=me, asker=asker, depth=1):
                seen.append(f"{me} asks {asker}")
                return heard, ask(Question(to=asker, asker=me, depth=2), timeout=5)
            case Question(to=me, asker=asker, depth=2):
                seen.append(f"{me} answers {asker}")
                return heard, reply(Answer(to=asker, depth=2))
            case Answer(to=me, depth=2):  # b, in the context of a's question
                seen.append(f"{me} answers {ctx.requester}")
                return heard + 1, reply(Answer(to=ctx.requester or "?", depth=1))
            case Answer(to=me, depth=1):  # a, in the context of the client's Start
                return heard + 1, reply(Done(to=me, heard=heard + 1))
            case AskTimedOut():
                raise AssertionError("an ask of the cycle timed out")
        raise AssertionError(message)

    async with running(topo, broker) as run:
        done = await run.client.ask(Start(to="a", other="b"), context=SHOP, timeout=20)
        assert done == Done(to="a", heard=1)
        assert seen == ["a asks b", "b asks a", "a answers b", "b answers a"]
        await run.idle()
        assert (run.state("peer", "a"), run.state("peer", "b")) == (1, 1)


async def test_an_answer_after_the_timeout_is_dropped_and_counted(broker: str) -> None:
    topo = new_topology("late", allow_unsigned=True)

    @actor(topo, Checkout | Reserved | AskTimedOut, state=Basket, topic=unique("carts"),
           emits=[CheckedOut])  # fmt: skip
    def cart(message: Checkout | Reserved | AskTimedOut, ctx: Context, basket: Basket):  # type: ignore[no-untyped-def]
        match message:
            case Checkout(sku=sku):
                return basket, ask(Reserve(sku=sku), timeout=0.1)
            case Reserved(sku=sku):
                return Basket(done=[*basket.done, sku]), None
            case AskTimedOut():
                return basket, reply(CheckedOut(cart="?", outcome="timed out"))
        raise AssertionError(message)

    @actor(topo, Reserve, state=Stock, topic=unique("inventory"), emits=[Reserved])
    async def inventory(message: Reserve, ctx: Context, stock: Stock):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.5)  # longer than the cart waits
        return stock, reply(Reserved(sku=message.sku, left=stock.left))

    async with running(topo, broker) as run:
        answer = await run.client.ask(Checkout(cart="c1", sku="fig"), context=SHOP)
        assert answer == CheckedOut(cart="?", outcome="timed out")
        for _ in range(100):
            await run.idle()
            if run.worker.metrics.snapshot().get("replies_dropped", {}).get("cart"):
                break
            await asyncio.sleep(0.05)
        assert run.worker.metrics.snapshot()["replies_dropped"]["cart"] == 1
        assert run.state("cart", "c1") == Basket()  # the late Reserved never became a message


class Go(Intent, type_name="asks.Go", key="who"):
    who: str


class Query(Intent, type_name="asks.Query", key="who", internal=True):
    who: str


class Response(Intent, type_name="asks.Response", key="who", internal=True):
    who: str


def test_an_actor_can_ask_itself() -> None:
    """Turn-based, never blocked while it waits: its own question is a later turn, and the
    answer the one after (no deadlock, no timeout)."""
    topo = new_topology("self", allow_unsigned=True)

    @actor(topo, Go | Query | Response | AskTimedOut, state=list, topic=unique("selves"),
           public=True, emits=[Response])  # fmt: skip
    def self_asker(message, ctx: Context, seen: list[str]):  # type: ignore[no-untyped-def]
        match message:
            case Go(who=who):
                return [*seen, "asked"], ask(Query(who=who), timeout=5)
            case Query(who=who):
                return [*seen, "questioned"], reply(Response(who=who))
            case Response():
                return [*seen, "answered"], None
        return [*seen, type(message).__name__], None

    with TestDriver(topo) as driver:
        driver.send(Go(who="me"))
        driver.advance(10)  # past the ask's timeout: it was answered, so nothing more
        assert driver.state("self_asker", "me") == ["asked", "questioned", "answered"]
