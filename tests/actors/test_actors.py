"""Actors on every transport (the ``broker`` fixture): one turn per message per actor, tell,
ask from outside, and each supervision strategy with its limits."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from support.running import WAIT, Running, new_topology, running, unique

from packetflow import Context, Intent, reply
from packetflow.actors import FAILED, GAVE_UP, STOPPED, actor, restart, resume, stop


class Add(Intent, type_name="actors.Add", key="cart", requires=["shop:cart/{cart}"]):
    cart: str
    sku: str
    fail: int = 0  # fail this many times (counted in the test's module state)


class Show(Intent, type_name="actors.Show", key="cart", requires=["shop:cart/{cart}"]):
    cart: str


class Contents(Intent, type_name="actors.Contents", key="cart", internal=True):
    cart: str
    items: list[str]


class Cart(BaseModel):
    items: list[str] = []


SHOP = Context(principal="tester", capabilities=["shop:cart/*"])


async def _until(run: Running, cart: str, want: Cart) -> None:
    """Wait (at most WAIT seconds) until the cart's state is ``want``: restarts wait for
    their backoff on the worker's clock."""
    for _ in range(int(WAIT / 0.05)):
        await run.idle()
        if run.state("cart", cart) == want:
            return
        await asyncio.sleep(0.05)
    assert run.state("cart", cart) == want


def _shop(prefix: str, supervision=None, failures: dict[str, int] | None = None):  # type: ignore[no-untyped-def]
    """A cart actor type; ``failures`` counts how often each sku has failed so far."""
    topo = new_topology(prefix, allow_unsigned=True)
    failed = failures if failures is not None else {}

    @actor(topo, Add | Show, state=Cart, topic=unique("carts"), supervision=supervision,
           emits=[Contents])  # fmt: skip
    def cart(message: Add | Show, ctx: Context, cart: Cart) -> tuple[Cart, object]:
        match message:
            case Add(sku=sku, fail=fail):
                if failed.get(sku, 0) < fail:
                    failed[sku] = failed.get(sku, 0) + 1
                    raise RuntimeError(f"{sku} is out of stock")
                return Cart(items=[*cart.items, sku]), None
            case Show(cart=which):
                return cart, reply(Contents(cart=which, items=cart.items))
        raise AssertionError(message)

    return topo


async def test_tell_keeps_one_state_per_actor_in_message_order(broker: str) -> None:
    topo = _shop("tell")
    async with running(topo, broker) as run:
        for cart, sku in [("c1", "a"), ("c2", "x"), ("c1", "b"), ("c1", "c")]:
            await run.send(Add(cart=cart, sku=sku), SHOP)
        await run.idle()
        assert run.state("cart", "c1") == Cart(items=["a", "b", "c"])
        assert run.state("cart", "c2") == Cart(items=["x"])
        assert run.state("cart", "nobody") is None


async def test_ask_from_outside_gets_the_actors_reply(broker: str) -> None:
    topo = _shop("ask")
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="a"), SHOP)
        answer = await run.client.ask(Show(cart="c1"), context=SHOP, timeout=10)
        assert answer == Contents(cart="c1", items=["a"])


async def test_a_message_without_the_capability_never_reaches_the_actor(broker: str) -> None:
    topo = _shop("deny")
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="a"), Context(principal="eve", capabilities=[]))
        (denied,) = await run.denied(1)
        assert denied.header("pf-reason") == "insufficient"
        assert run.state("cart", "c1") is None


async def test_restart_tries_the_message_again_while_the_actors_later_messages_wait(
    broker: str,
) -> None:
    topo = _shop("restart", restart(max_restarts=3, backoff=(0.05, 0.2)))
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="a"), SHOP)
        await run.send(Add(cart="c1", sku="b", fail=2), SHOP)  # fails twice, then works
        await run.send(Add(cart="c1", sku="c"), SHOP)  # waits for b
        await run.send(Add(cart="c2", sku="x"), SHOP)  # another actor: not held back
        await run.idle()
        assert run.state("cart", "c2") == Cart(items=["x"])
        await _until(run, "c1", Cart(items=["a", "b", "c"]))
        snapshot = run.worker.metrics.snapshot()
        assert snapshot["supervision_restart"]["cart"] == 2
        assert not await run.read(topo.dead_letter_topic)


async def test_restart_gives_up_past_max_restarts_and_goes_on(broker: str) -> None:
    topo = _shop("giveup", restart(max_restarts=1, backoff=(0.05, 0.1)))
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="bad", fail=5), SHOP)
        await run.send(Add(cart="c1", sku="good"), SHOP)
        (dead,) = await run.dead_letters(1)
        assert dead.header("pf-reason") == GAVE_UP
        assert dead.intent == Add(cart="c1", sku="bad", fail=5)  # set aside as it came
        await _until(run, "c1", Cart(items=["good"]))


async def test_resume_sets_the_message_aside_and_keeps_the_state(broker: str) -> None:
    topo = _shop("resume", resume())
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="a"), SHOP)
        await run.send(Add(cart="c1", sku="bad", fail=1), SHOP)
        await run.send(Add(cart="c1", sku="b"), SHOP)
        (dead,) = await run.dead_letters(1)
        assert dead.header("pf-reason") == FAILED
        assert "out of stock" in (dead.header("pf-error") or "")
        assert run.state("cart", "c1") == Cart(items=["a", "b"])


async def test_stop_sets_every_later_message_of_that_actor_aside(broker: str) -> None:
    topo = _shop("stop", stop())
    async with running(topo, broker) as run:
        await run.send(Add(cart="c1", sku="bad", fail=1), SHOP)
        await run.send(Add(cart="c1", sku="b"), SHOP)
        await run.send(Add(cart="c2", sku="x"), SHOP)
        first, then = await run.dead_letters(2)
        assert (first.header("pf-reason"), then.header("pf-reason")) == (FAILED, STOPPED)
        assert run.state("cart", "c2") == Cart(items=["x"])
        assert run.state("cart", "c1") is None


@pytest.mark.parametrize("attempt", [1, 2, 3, 10])
def test_backoff_doubles_up_to_the_longest_wait_with_the_same_jitter_each_time(
    attempt: int,
) -> None:
    policy = restart(backoff=(0.1, 0.5), jitter=0.2)
    want = min(0.5, 0.1 * 2 ** (attempt - 1))
    assert want * 0.8 <= policy.delay(attempt, b"c1") <= want
    assert policy.delay(attempt, b"c1") == policy.delay(attempt, b"c1")
