"""Open effects: a substrate or an interface declares an ``Effect`` of its own and registers
its handler on the topology; the engine runs it like its own (in compositions too), refuses
an effect nobody handles when the reactor returns it, and seals what a handler emits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from packetflow import (
    Context,
    Effect,
    Emit,
    Intent,
    TestDriver,
    Topology,
    TopologyError,
    emit,
    pipeline,
    sequential,
)
from packetflow.engine.agent import EffectRunner, Origin
from packetflow.engine.codec import MAC_HEADER


class Order(Intent, type_name="fx.Order", key="id"):
    id: str
    mode: str = "notify"


class Shipped(Intent, type_name="fx.Shipped", key="id"):
    id: str
    note: str = ""


class Paged(Intent, type_name="fx.Paged", key="id", internal=True):
    id: str
    who: str


@dataclass(frozen=True, slots=True)
class Notify(Effect):
    """An effect of a made-up substrate: page someone about an order."""

    who: str
    order: str


@dataclass(frozen=True, slots=True)
class Unhandled(Effect):
    what: str


CALLS: list[tuple[str, str, str]] = []


async def notify(effect: Notify, origin: Origin, runner: EffectRunner) -> str:
    CALLS.append((effect.who, effect.order, origin.reactor))
    delivery = await runner.emit(Paged(id=effect.order, who=effect.who), origin, topic="pages")
    return f"paged {effect.who} at offset {delivery.offset}"


def topology() -> Topology:
    topo = Topology("effects", namespace="", partitions=1)
    topo.topic("shipped")
    topo.topic("pages")
    topo.register_effect(Notify, notify)

    @topo.reactor(Order, topic="orders", public=True, emits=[Shipped, Paged])
    def ship(order: Order, ctx: Context) -> Any:
        if order.mode == "notify":
            return sequential(Notify("ops", order.id), emit(Shipped(id=order.id), "shipped"))
        if order.mode == "pipeline":  # a handler's return value feeds the next step
            return pipeline(
                Notify("ops", order.id),
                lambda said: Emit(Shipped(id=order.id, note=said), topic="shipped"),
            )
        if order.mode == "bare":
            return Notify("sales", order.id)
        # an effect nobody registered, beside a plain emit that must not escape
        return [emit(Shipped(id=order.id), "shipped"), Unhandled("?")]

    return topo


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CALLS.clear()


def test_a_registered_effect_runs_alone_and_inside_compositions() -> None:
    with TestDriver(topology()) as driver:
        driver.send(Order(id="o1"))
        driver.send(Order(id="o2", mode="pipeline"))
        driver.send(Order(id="o3", mode="bare"))
        shipped = driver.emitted("shipped")
        pages = driver.records("pages")
        assert driver.dead_letters() == []

    assert CALLS == [("ops", "o1", "ship"), ("ops", "o2", "ship"), ("sales", "o3", "ship")]
    assert shipped == [Shipped(id="o1"), Shipped(id="o2", note="paged ops at offset 1")]
    assert [p.intent for p in pages] == [
        Paged(id="o1", who="ops"), Paged(id="o2", who="ops"), Paged(id="o3", who="sales")
    ]
    # what the engine emits on a reactor's behalf is its own: sealed, so workers take it
    assert all(p.header(MAC_HEADER) for p in pages)


def test_an_effect_nobody_handles_is_refused_before_anything_is_sent() -> None:
    with TestDriver(topology()) as driver:
        driver.send(Order(id="o1", mode="unknown"))
        (dead,) = driver.dead_letters()
        assert driver.emitted("shipped") == []  # the emit beside it did not escape

    assert dead.header("pf-reason") == "effect-error"
    assert dead.header("pf-error") == (
        "no handler for effect Unhandled: register one with topology.register_effect(...)"
    )


def test_a_handler_cannot_write_where_an_emit_could_not() -> None:
    topo = Topology("sneaky", namespace="", partitions=1)

    async def sneaky(effect: Notify, origin: Origin, runner: EffectRunner) -> None:
        await runner.emit(Paged(id=effect.order, who="x"), origin, topic=topo.audit_topic)

    topo.register_effect(Notify, sneaky)

    @topo.reactor(Order, topic="orders", public=True)
    def ship(order: Order, ctx: Context) -> Any:
        return Notify("x", order.id)

    with TestDriver(topo) as driver:
        driver.send(Order(id="o1"))
        (dead,) = driver.dead_letters()
        audit = driver.records(topo.audit_topic)
    assert dead.header("pf-reason") == "forbidden-topic"
    assert "a topic the engine manages" in (dead.header("pf-error") or "")
    assert not [r for r in audit if r.header("pf-type") == Paged.intent_type]


def test_register_effect_takes_effect_subclasses_only() -> None:
    topo = Topology("registry", namespace="")
    with pytest.raises(TopologyError, match=r"not a subclass of packetflow\.Effect"):
        topo.register_effect(str, notify)
    with pytest.raises(TopologyError, match="Emit is the engine's own effect"):
        topo.register_effect(Emit, notify)


@pytest.mark.parametrize(
    "context",
    [Context.new("alice", token="abc.def"), Context.new("alice", ["fx:order/*"])],
    ids=["pf-token", "pf-capabilities"],
)
def test_an_emitted_record_one_byte_over_its_topics_limit_is_refused(context: Context) -> None:
    """Bare intents take the engine's short way to a record; the size check there is the
    same as everywhere: a record that fits is sent, one a byte larger is output-too-large."""
    from packetflow.engine.clock import WALL_CLOCK
    from packetflow.engine.runtime.interpreter import EffectError, Interpreter
    from packetflow.engine.transport import record_bytes

    # plain capabilities travel as they are where a topology takes them (elsewhere only a
    # worker's kept grants carry them, sealed: the general path)
    topo = Topology("sizes", namespace="", partitions=1, allow_unsigned=True)
    topo.route(Shipped, "shipped")
    origin = Origin("ship", context, b"o-1")
    shipped = Shipped(id="o-1", note="x" * 200)
    (record,), _ = Interpreter(topo, None, WALL_CLOCK).prepare(shipped, origin)
    size = record_bytes(record.key, record.value, record.headers)  # the same for every emit
    fits = Interpreter(topo, None, WALL_CLOCK, limits={"shipped": size})
    assert [r.topic for r in fits.prepare(shipped, origin).outgoing] == ["shipped"]
    tight = Interpreter(topo, None, WALL_CLOCK, limits={"shipped": size - 1})
    with pytest.raises(EffectError, match="more than the topic takes") as refused:
        tight.prepare(shipped, origin)
    assert refused.value.reason == "output-too-large"
