"""Behaviour users rely on, run end to end on both transports (``memory://`` and real Kafka).

Every test declares its own small topology with a unique name and unique topics, so tests
never share topics or consumer groups on the real broker. The ``broker`` fixture (in
conftest.py) gives each test both URLs in turn; ``running`` (tests/support/running.py) runs
a worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from support.running import new_topology, running, unique

from packetflow import (
    Context,
    Delivery,
    Intent,
    Received,
    call,
    emit,
    fan_out,
    pipeline,
    reply,
    retry,
    sequential,
    when,
)
from packetflow.engine.codec import encode


def by_offset(received: list[Received]) -> list[Received]:
    return sorted(received, key=lambda r: (r.record.partition, r.record.offset))


def intents(received: list[Received]) -> list[Intent]:
    out = [r.intent for r in by_offset(received)]
    assert all(i is not None for i in out)
    return out


# -- shared intents ----------------------------------------------------------------------


class Add(Intent, type_name="test.Add", key="key"):
    key: str
    n: int


class Reset(Intent, type_name="test.Reset", key="key"):
    key: str


class Total(Intent, type_name="test.Total", key="key"):
    key: str
    total: int


class Note(Intent, type_name="test.Note", key="key"):
    key: str
    text: str


# -- keyed state -------------------------------------------------------------------------


class Tally(BaseModel):
    count: int = 0
    total: int = 0
    last: int | None = None


async def test_keyed_state_accumulates_per_key(broker: str) -> None:
    topo = new_topology("state")
    source = unique("adds")

    @topo.reactor(Add, topic=source, state=Tally, public=True)
    def tally(intent: Add, ctx: Context, state: Tally) -> tuple[Tally, None]:
        return Tally(count=state.count + 1, total=state.total + intent.n, last=intent.n), None

    @topo.reactor(Add, topic=source, state=0, name="plain_int", public=True)
    def plain_int(intent: Add, ctx: Context, state: int) -> tuple[int, None]:
        return state + intent.n, None

    @topo.reactor(Add, topic=source, state={"ns": []}, name="plain_dict", public=True)
    def plain_dict(intent: Add, ctx: Context, state: dict) -> tuple[dict, None]:
        return {"ns": [*state["ns"], intent.n]}, None

    sends = [("a", 1), ("b", 10), ("a", 2), ("c", 100), ("b", 20), ("a", 3)]
    async with running(topo, broker) as run:
        for key, n in sends:
            await run.send(Add(key=key, n=n))
        await run.idle()

        assert run.state("tally", "a") == Tally(count=3, total=6, last=3)
        assert run.state("tally", "b") == Tally(count=2, total=30, last=20)
        assert run.state("tally", "c") == Tally(count=1, total=100, last=100)
        assert run.state("tally", "nobody") is None
        assert {k: run.state("plain_int", k) for k in "abc"} == {"a": 6, "b": 30, "c": 100}
        assert run.worker.states("plain_dict") == {
            "a": {"ns": [1, 2, 3]},
            "b": {"ns": [10, 20]},
            "c": {"ns": [100]},
        }


async def test_state_is_restored_from_the_changelog_by_the_next_worker(broker: str) -> None:
    topo = new_topology("restore")
    source = unique("adds")

    @topo.reactor(Add, topic=source, state=Tally, public=True)
    def tally(intent: Add, ctx: Context, state: Tally) -> tuple[Tally, None]:
        return Tally(count=state.count + 1, total=state.total + intent.n), None

    async with running(topo, broker) as run:
        for n in (1, 2, 3):
            await run.send(Add(key="a", n=n))
        await run.send(Add(key="b", n=7))
        await run.idle()
        assert run.state("tally", "a") == Tally(count=3, total=6)

    async with running(topo, broker) as run:
        await run.idle()
        assert run.state("tally", "a") == Tally(count=3, total=6)
        assert run.state("tally", "b") == Tally(count=1, total=7)
        assert run.worker.metrics.restored["tally"] >= 2
        await run.send(Add(key="a", n=4))
        await run.idle()
        assert run.state("tally", "a") == Tally(count=4, total=10)


# -- chains and context ------------------------------------------------------------------


class Order(Intent, type_name="chain.Order", key="order_id"):
    order_id: str
    amount: int


class Priced(Intent, type_name="chain.Priced", key="order_id"):
    order_id: str
    amount: int
    tax: int


class Shipped(Intent, type_name="chain.Shipped", key="order_id"):
    order_id: str
    charged: int


async def test_chain_across_two_reactors_reaches_the_end(broker: str) -> None:
    topo = new_topology("chain")
    orders, priced, shipped = unique("orders"), unique("priced"), unique("shipped")
    topo.route(Shipped, shipped)

    @topo.reactor(Order, topic=orders, emits=[Priced], public=True)
    def price(intent: Order, ctx: Context) -> Priced:
        return Priced(order_id=intent.order_id, amount=intent.amount, tax=intent.amount // 10)

    @topo.reactor(Priced, topic=priced, emits=[Shipped], public=True)
    def ship(intent: Priced, ctx: Context) -> Shipped:
        return Shipped(order_id=intent.order_id, charged=intent.amount + intent.tax)

    async with running(topo, broker) as run:
        contexts = {}
        for i, amount in enumerate((100, 250, 40)):
            ctx = Context.new("shop")
            contexts[f"o{i}"] = ctx
            await run.send(Order(order_id=f"o{i}", amount=amount), ctx)

        out = await run.wait_for(shipped, 3)
        assert sorted(intents(out), key=lambda s: s.order_id) == [
            Shipped(order_id="o0", charged=110),
            Shipped(order_id="o1", charged=275),
            Shipped(order_id="o2", charged=44),
        ]
        middle = {r.intent.order_id: r for r in await run.read(priced)}
        for r in out:
            assert r.intent is not None and r.context is not None
            origin = contexts[r.intent.order_id]
            hop = middle[r.intent.order_id].context
            assert hop is not None
            assert r.context.trace == ("price", "ship")
            assert r.context.trace_id == hop.trace_id == origin.trace_id
            assert r.context.correlation_id == origin.intent_id
            assert hop.causation_id == origin.intent_id
            assert r.context.causation_id == hop.intent_id
            assert r.record.key == r.intent.order_id.encode()


async def test_context_propagates_to_emitted_intents(broker: str) -> None:
    # plain capabilities (opt-in) here; tests/behaviour/test_security.py propagates signed tokens
    topo = new_topology("context", capabilities={"clerk": ["note"]}, allow_unsigned=True)
    notes, echoes = unique("notes"), unique("echoes")

    class Echo(Intent, type_name="ctx.Echo", key="key"):
        key: str
        text: str

    topo.route(Echo, echoes)

    class Noted(Intent, type_name="ctx.Note", key="key", requires=["note:thing/{key}"]):
        key: str
        text: str

    @topo.reactor(Noted, topic=notes)
    def relay(intent: Noted, ctx: Context) -> Echo:
        return Echo(key=intent.key, text=intent.text.upper())

    ctx = Context.new(
        "alice",
        ["clerk:thing/*", "read:other"],
        baggage={"tenant": "t1"},
        deadline=datetime.now(UTC) + timedelta(hours=1),
    )
    async with running(topo, broker) as run:
        sent = await run.send(Noted(key="k1", text="hi"), ctx)
        (out,) = await run.wait_for(echoes, 1)

    assert out.intent == Echo(key="k1", text="HI")
    got = out.context
    assert got is not None
    assert got.trace_id == ctx.trace_id
    assert got.correlation_id == ctx.correlation_id == ctx.intent_id
    assert got.causation_id == ctx.intent_id
    assert got.parent_span_id == ctx.span_id
    assert got.intent_id != ctx.intent_id and got.span_id != ctx.span_id
    assert got.trace == ("relay",)
    assert got.principal == "alice"
    assert [str(c) for c in got.capabilities] == ["clerk:thing/*", "read:other"]
    assert got.baggage == {"tenant": "t1"}
    assert got.deadline == ctx.deadline
    assert out.header("pf-type") == "ctx.Echo"
    assert out.record.key == b"k1"
    assert sent.topic == notes


# -- capabilities ------------------------------------------------------------------------


class Withdraw(
    Intent, type_name="cap.Withdraw", key="account", requires=["withdraw:account/{account}"]
):
    account: str
    amount: int


async def test_capabilities_through_the_hierarchy_and_denial(broker: str) -> None:
    # the hierarchy's semantics, with plain capabilities (opt-in); the same check with signed
    # tokens, and every way a token is refused, are in tests/behaviour/test_security.py
    topo = new_topology(
        "caps",
        capabilities={"admin": ["teller"], "teller": ["withdraw", "read"]},
        allow_unsigned=True,
    )
    source, ledger = unique("withdrawals"), unique("ledger")
    topo.route(Total, ledger)

    @topo.reactor(Withdraw, topic=source, state=0)
    def accounts(intent: Withdraw, ctx: Context, state: int) -> tuple[int, Total]:
        total = state + intent.amount
        return total, Total(key=intent.account, total=total)

    allowed = [
        ("a1", ["admin:account/*"]),  # admin => teller => withdraw
        ("a1", ["teller:account/a1"]),  # role held on exactly this account
        ("a1", ["withdraw:account/*"]),  # the operation itself
        ("a1", ["read:*", "teller:**"]),  # any one held capability is enough
    ]
    refused = [
        ("b2", ["teller:account/a1"], "withdraw:account/b2"),  # another account
        ("b2", ["read:account/*"], "withdraw:account/b2"),  # implication is not upward
        ("b2", [], "withdraw:account/b2"),
        ("b2", ["teller:accounts/b2"], "withdraw:account/b2"),
    ]
    async with running(topo, broker) as run:
        sent: dict[tuple[int, int], bytes] = {}
        for i, (account, caps) in enumerate(allowed):
            await run.send(Withdraw(account=account, amount=i + 1), Context.new("t", caps))
        for account, caps, _ in refused:
            intent = Withdraw(account=account, amount=1000)
            delivery = await run.send(intent, Context.new("mallory", caps))
            sent[(delivery.partition, delivery.offset)] = intent.model_dump_json().encode()

        denied = await run.denied(len(refused))
        totals = await run.wait_for(ledger, len(allowed))
        assert [t.total for t in intents(totals)] == [1, 3, 6, 10]
        assert run.state("accounts", "a1") == 10
        assert run.state("accounts", "b2") is None  # the reactor never ran for b2

        originals = {(r.record.partition, r.record.offset): r for r in await run.read(source)}

    held = []
    for r in by_offset(denied):
        assert r.header("pf-reason") == "insufficient"
        assert r.header("pf-missing") == "withdraw:account/b2"
        assert r.header("pf-error") == "mallory lacks withdraw:account/b2 for cap.Withdraw"
        topic, partition, offset = (r.header("pf-source") or "").rsplit("/", 2)
        assert topic == source
        where = (int(partition), int(offset))
        assert r.record.value == sent[where]  # original bytes
        assert r.record.value == originals[where].record.value
        assert r.header("pf-context") == originals[where].header("pf-context")
        assert r.record.key == b"b2"
        assert r.context is not None
        held.append([str(c) for c in r.context.capabilities])
    assert sorted(held) == sorted(caps for _, caps, _ in refused)


# -- bad input ---------------------------------------------------------------------------

MAX_BYTES = 2048
BadRecord = tuple[bytes | None, list[tuple[str, bytes]]]


def _headers(intent: Intent, ctx: Context | None = None) -> list[tuple[str, bytes]]:
    return encode(intent, ctx or Context.new())[1]


def _swap(headers: list[tuple[str, bytes]], name: str, value: bytes | None) -> list:
    out = [(k, v) for k, v in headers if k != name]
    return out if value is None else [*out, (name, value)]


BAD_INPUTS: dict[str, tuple[str, Callable[[], BadRecord]]] = {
    "bad-json": ("decode", lambda: (b'{"key": "k1", "n": ', _headers(Add(key="k1", n=1)))),
    "unknown-type": (
        "unknown-type",
        lambda: (
            b'{"key": "k1", "n": 1}',
            _swap(_headers(Add(key="k1", n=1)), "pf-type", b"test.Nope"),
        ),
    ),
    "validation": (
        "validation",
        lambda: (b'{"key": "k1", "n": "many"}', _headers(Add(key="k1", n=1))),
    ),
    "oversized": (
        "oversized",
        lambda: (
            Add(key="k1", n=1).model_dump_json().encode()[:-1]
            + b', "pad": "'
            + b"x" * MAX_BYTES
            + b'"}',
            _headers(Add(key="k1", n=1)),
        ),
    ),
    "missing-type": (
        "missing-type",
        lambda: (b'{"key": "k1", "n": 1}', _swap(_headers(Add(key="k1", n=1)), "pf-type", None)),
    ),
    "schema-version": (
        "schema-version",
        lambda: (b'{"key": "k1", "n": 1}', _swap(_headers(Add(key="k1", n=1)), "pf-version", b"2")),
    ),
    "deadline": (
        "deadline",
        lambda: (
            b'{"key": "k1", "n": 1}',
            _headers(
                Add(key="k1", n=1), Context.new(deadline=datetime.now(UTC) - timedelta(seconds=1))
            ),
        ),
    ),
    "empty": ("empty", lambda: (None, _headers(Add(key="k1", n=1)))),
    "bad-context": (
        "bad-context",
        lambda: (
            b'{"key": "k1", "n": 1}',
            _swap(_headers(Add(key="k1", n=1)), "pf-context", b'{"principal": 7'),
        ),
    ),
    "bad-header": (
        "bad-header",
        lambda: (
            b'{"key": "k1", "n": 1}',
            _swap(_headers(Add(key="k1", n=1)), "pf-version", b"v1"),
        ),
    ),
}


@pytest.mark.parametrize("kind", list(BAD_INPUTS))
async def test_bad_input_is_dead_lettered_and_the_partition_keeps_flowing(
    broker: str, kind: str
) -> None:
    reason, make = BAD_INPUTS[kind]
    topo = new_topology("bad", max_record_bytes=MAX_BYTES)
    source = unique("adds")

    # two intent types on the topic, so a record without pf-type cannot be guessed
    @topo.reactor(Add | Reset, topic=source, state=0, public=True)
    def counter(intent: Add | Reset, ctx: Context, state: int) -> tuple[int, None]:
        match intent:
            case Add(n=n):
                return state + n, None
            case Reset():
                return 0, None
        raise AssertionError(intent)

    value, headers = make()
    async with running(topo, broker) as run:
        first = await run.send(Add(key="k1", n=1))
        bad = await run.client.send_raw(source, value, key=b"k1", headers=headers)
        last = await run.send(Add(key="k1", n=10))
        assert first.partition == bad.partition == last.partition  # one ordered partition
        (dead,) = await run.dead_letters(1)
        await run.idle()
        assert run.state("counter", "k1") == 11  # the good records around it were processed

    assert dead.header("pf-reason") == reason
    assert dead.header("pf-source") == f"{source}/{bad.partition}/{bad.offset}"
    assert dead.header("pf-error")
    assert dead.header("pf-reactor") is None
    assert dead.record.value == value  # original bytes, byte for byte
    assert dead.record.key == b"k1"
    kept = [(k, bytes(v)) for k, v in dead.record.headers]
    assert kept[: len(headers)] == headers  # the original headers, then why
    assert [k for k, _ in kept[len(headers) :]] == ["pf-reason", "pf-error", "pf-source"]


async def test_a_record_without_a_type_needs_the_topic_to_name_a_default(
    broker: str,
) -> None:
    topo = new_topology("single")
    source, strict = unique("adds"), unique("strict")
    topo.topic(source, default_type=Add)  # the opt-in: records without pf-type are Adds

    @topo.reactor(Add, topic=source, state=0, public=True)
    def counter(intent: Add, ctx: Context, state: int) -> tuple[int, None]:
        return state + intent.n, None

    @topo.reactor(Add, topic=strict, state=0, public=True, name="strict_counter")
    def strict_counter(intent: Add, ctx: Context, state: int) -> tuple[int, None]:
        return state + intent.n, None

    async with running(topo, broker) as run:
        await run.client.send_raw(source, b'{"key": "k", "n": 5}', key=b"k")
        await run.client.send_raw(strict, b'{"key": "k", "n": 5}', key=b"k")
        (dead,) = await run.dead_letters(1)
        assert run.state("counter", "k") == 5
        assert run.state("strict_counter", "k") is None
    assert dead.header("pf-reason") == "missing-type"
    assert (dead.header("pf-source") or "").startswith(f"{strict}/")


# -- reactor errors ----------------------------------------------------------------------


async def test_reactor_exception_dead_letters_and_keeps_old_state(broker: str) -> None:
    topo = new_topology("errors")
    source, totals = unique("adds"), unique("totals")
    topo.route(Total, totals)

    @topo.reactor(Add, topic=source, state=0, public=True)
    def fragile(intent: Add, ctx: Context, state: int) -> tuple[int, Total]:
        if intent.n == 13:
            raise ValueError(f"unlucky {intent.n} after {state}")
        return state + intent.n, Total(key=intent.key, total=state + intent.n)

    async with running(topo, broker) as run:
        await run.send(Add(key="k", n=1))
        failing = await run.send(Add(key="k", n=13))
        (dead,) = await run.dead_letters(1)
        assert run.state("fragile", "k") == 1  # unchanged by the failing record

        await run.send(Add(key="k", n=2))
        await run.send(Add(key="other", n=5))
        out = await run.wait_for(totals, 3)
        assert run.state("fragile", "k") == 3
        assert run.state("fragile", "other") == 5
        assert run.worker.metrics.errors["fragile"] == 1

    assert sorted((t.key, t.total) for t in intents(out)) == [
        ("k", 1),
        ("k", 3),
        ("other", 5),
    ]
    assert dead.header("pf-reason") == "reactor-error"
    assert dead.header("pf-reactor") == "fragile"
    assert dead.header("pf-error") == "ValueError: unlucky 13 after 1"
    assert dead.header("pf-source") == f"{source}/{failing.partition}/{failing.offset}"
    assert dead.intent == Add(key="k", n=13)
    assert dead.record.value == Add(key="k", n=13).model_dump_json().encode()


async def test_stateful_reactor_must_return_a_pair(broker: str) -> None:
    topo = new_topology("pair")
    source = unique("adds")

    @topo.reactor(Add, topic=source, state=0, public=True)
    def forgetful(intent: Add, ctx: Context, state: int) -> int:
        return state + intent.n

    async with running(topo, broker) as run:
        await run.send(Add(key="k", n=1))
        (dead,) = await run.dead_letters(1)
        assert run.state("forgetful", "k") is None
    assert dead.header("pf-reason") == "reactor-error"
    assert "must return (new_state, effects)" in (dead.header("pf-error") or "")


# -- effect compositions -----------------------------------------------------------------


class First(Intent, type_name="fx.First", key="key"):
    key: str
    n: int


class Second(Intent, type_name="fx.Second", key="key"):
    key: str
    n: int


class Where(Intent, type_name="fx.Where", key="key"):
    key: str
    topic: str
    partition: int
    offset: int


async def test_sequential_emits_in_order_and_returns_deliveries(broker: str) -> None:
    topo = new_topology("seq")
    source, out = unique("adds"), unique("out")
    topo.route(First, out)
    topo.route(Second, out)
    results: list[Any] = []

    @topo.reactor(Add, topic=source, public=True)
    def seq(intent: Add, ctx: Context) -> Any:
        steps = sequential(emit(First(key=intent.key, n=intent.n))) >> emit(
            Second(key=intent.key, n=intent.n)
        )
        return pipeline(steps, lambda deliveries: call(results.append, deliveries))

    async with running(topo, broker) as run:
        for n in range(3):
            await run.send(Add(key="k", n=n))
        received = await run.wait_for(out, 6)

    records = by_offset(received)
    assert len({r.record.partition for r in records}) == 1
    assert [(type(r.intent).__name__, r.intent.n) for r in records] == [
        ("First", 0),
        ("Second", 0),
        ("First", 1),
        ("Second", 1),
        ("First", 2),
        ("Second", 2),
    ]
    assert len(results) == 3
    for first, second in results:
        assert isinstance(first, Delivery) and isinstance(second, Delivery)
        assert first.topic == second.topic == out
        assert second.offset == first.offset + 1


async def test_parallel_runs_every_branch(broker: str) -> None:
    topo = new_topology("par")
    source, left, right = unique("adds"), unique("left"), unique("right")
    topo.route(First, left)
    topo.route(Second, right)
    calls: list[tuple[str, int]] = []
    results: list[Any] = []

    async def side(key: str, n: int) -> str:
        await asyncio.sleep(0)
        calls.append((key, n))
        return f"side-{n}"

    @topo.reactor(Add, topic=source, public=True)
    def fork(intent: Add, ctx: Context) -> Any:
        both = (
            emit(First(key=intent.key, n=intent.n))
            & emit(Second(key=intent.key, n=-intent.n))
            & call(side, intent.key, intent.n)
        )
        return pipeline(both, lambda r: call(results.append, r))

    async with running(topo, broker) as run:
        await run.send(Add(key="a", n=1))
        await run.send(Add(key="b", n=2))
        lefts = await run.wait_for(left, 2)
        rights = await run.wait_for(right, 2)

    assert sorted((i.key, i.n) for i in intents(lefts)) == [("a", 1), ("b", 2)]
    assert sorted((i.key, i.n) for i in intents(rights)) == [("a", -1), ("b", -2)]
    assert sorted(calls) == [("a", 1), ("b", 2)]
    assert sorted(r[2] for r in results) == ["side-1", "side-2"]
    assert all(r[0].topic == left and r[1].topic == right for r in results)


async def test_conditional_takes_either_branch(broker: str) -> None:
    topo = new_topology("cond")
    source, pos, neg = unique("adds"), unique("pos"), unique("neg")
    topo.route(First, pos)
    topo.route(Second, neg)
    topo.route(Note, pos)
    checked: list[int] = []

    @topo.reactor(Add, topic=source, public=True)
    def branch(intent: Add, ctx: Context) -> Any:
        def is_big() -> bool:
            checked.append(intent.n)
            return abs(intent.n) >= 100

        return [
            when(
                intent.n >= 0,
                emit(First(key=intent.key, n=intent.n)),
                emit(Second(key=intent.key, n=intent.n)),
            ),
            when(is_big, emit(Note(key=intent.key, text="big"), topic=pos)),
        ]

    async with running(topo, broker) as run:
        for n in (5, -3, 100, -7):
            await run.send(Add(key="k", n=n))
        positives = await run.wait_for(pos, 3)
        negatives = await run.wait_for(neg, 2)

    assert intents(positives) == [
        First(key="k", n=5),
        First(key="k", n=100),
        Note(key="k", text="big"),
    ]
    assert intents(negatives) == [Second(key="k", n=-3), Second(key="k", n=-7)]
    assert checked == [5, -3, 100, -7]  # a callable condition is evaluated when run


async def test_pipeline_step_sees_the_previous_delivery(broker: str) -> None:
    topo = new_topology("pipe")
    source, out, where = unique("adds"), unique("out"), unique("where")
    topo.route(First, out)
    topo.route(Where, where)
    topo.route(Note, out)

    @topo.reactor(Add, topic=source, public=True)
    def track(intent: Add, ctx: Context) -> Any:
        return pipeline(
            emit(First(key=intent.key, n=intent.n)),
            lambda d: emit(
                Where(key=intent.key, topic=d.topic, partition=d.partition, offset=d.offset)
            ),
            lambda d: None if intent.n > 0 else emit(Note(key=intent.key, text="stop"), topic=out),
        )

    async with running(topo, broker) as run:
        for key in ("a", "b", "c"):
            await run.send(Add(key=key, n=1))
        await run.send(Add(key="a", n=0))
        firsts = await run.wait_for(out, 5)
        wheres = await run.wait_for(where, 4)

    located = {(r.record.topic, r.record.partition, r.record.offset): r.intent for r in firsts}
    for w in intents(wheres):
        found = located[(w.topic, w.partition, w.offset)]
        assert found == First(key=w.key, n=found.n)
    assert [i for i in located.values() if isinstance(i, Note)] == [Note(key="a", text="stop")]


async def test_fan_out_sends_the_same_intent_to_every_topic(broker: str) -> None:
    topo = new_topology("fan")
    source, one, two = unique("notes"), unique("one"), unique("two")
    topo.topic(one)
    topo.topic(two)

    @topo.reactor(Note, topic=source, public=True)
    def broadcast(intent: Note, ctx: Context) -> Any:
        return fan_out(Note(key=intent.key, text=intent.text + "!"), one, two)

    async with running(topo, broker) as run:
        await run.send(Note(key="k", text="hello"))
        (a,) = await run.wait_for(one, 1)
        (b,) = await run.wait_for(two, 1)

    assert a.intent == b.intent == Note(key="k", text="hello!")
    assert a.record.value == b.record.value
    assert a.record.key == b.record.key == b"k"
    assert a.context is not None and b.context is not None
    assert a.context.trace == b.context.trace == ("broadcast",)


async def test_call_runs_its_side_effect(broker: str) -> None:
    topo = new_topology("call")
    source = unique("adds")
    seen: list[tuple[str, int]] = []

    @topo.reactor(Add, topic=source, state=0, public=True)
    def record(intent: Add, ctx: Context, state: int) -> tuple[int, Any]:
        return state + 1, call(seen.append, (intent.key, state + intent.n))

    async with running(topo, broker) as run:
        for key, n in (("a", 10), ("a", 20), ("b", 30)):
            await run.send(Add(key=key, n=n))
        await run.idle()
        assert run.state("record", "a") == 2

    assert sorted(seen) == [("a", 10), ("a", 21), ("b", 30)]


async def test_retry_runs_until_the_call_succeeds(broker: str) -> None:
    topo = new_topology("retry-ok")
    source = unique("adds")
    attempts: list[int] = []

    def flaky(n: int) -> str:
        attempts.append(n)
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    @topo.reactor(Add, topic=source, state=0, public=True)
    def charge(intent: Add, ctx: Context, state: int) -> tuple[int, Any]:
        return state + intent.n, retry(call(flaky, intent.n), attempts=5, base_delay=0.01)

    async with running(topo, broker) as run:
        await run.send(Add(key="k", n=7))
        await run.idle()
        assert attempts == [7, 7, 7]
        assert run.state("charge", "k") == 7
        assert await run.read(topo.dead_letter_topic) == []


async def test_retry_that_never_succeeds_dead_letters_without_committing_state(
    broker: str,
) -> None:
    topo = new_topology("retry-fail")
    source = unique("adds")
    attempts: list[int] = []

    async def broken(n: int) -> None:
        attempts.append(n)
        raise ConnectionError(f"down ({len(attempts)})")

    @topo.reactor(Add, topic=source, state=0, public=True)
    def charge(intent: Add, ctx: Context, state: int) -> tuple[int, Any]:
        if intent.n < 0:
            return state + intent.n, retry(call(broken, intent.n), attempts=3, base_delay=0.01)
        return state + intent.n, None

    async with running(topo, broker) as run:
        await run.send(Add(key="k", n=5))
        await run.send(Add(key="k", n=-1))
        await run.send(Add(key="k", n=3))
        (dead,) = await run.dead_letters(1)
        assert run.state("charge", "k") == 8  # the failed record's state was not committed

    assert attempts == [-1, -1, -1]
    assert dead.header("pf-reason") == "reactor-error"
    assert dead.header("pf-reactor") == "charge"
    assert dead.header("pf-error") == "ConnectionError: down (3)"
    assert dead.intent == Add(key="k", n=-1)


# -- reply -------------------------------------------------------------------------------


class Ask(Intent, type_name="rpc.Ask", key="key"):
    key: str
    question: str


class Answer(Intent, type_name="rpc.Answer"):
    answer: str


async def test_reply_goes_to_reply_to_or_dead_letters_without_it(broker: str) -> None:
    topo = new_topology("reply")
    source = unique("asks")
    replies = topo.replies_topic  # <topology>.replies: where reply_to may point
    topo.route(Answer, replies)  # so that the client reading it back knows the type

    @topo.reactor(Ask, topic=source, public=True)
    def oracle(intent: Ask, ctx: Context) -> Any:
        return reply(Answer(answer=intent.question[::-1]))

    async with running(topo, broker) as run:
        ctx = Context.new("asker", reply_to=topo.physical(replies))
        await run.send(Ask(key="q1", question="ping"), ctx)
        (answer,) = await run.wait_for(replies, 1)

        lost = await run.send(Ask(key="q2", question="anyone?"))
        (dead,) = await run.dead_letters(1)
        assert len(await run.read(replies)) == 1

    assert answer.intent == Answer(answer="gnip")
    assert answer.record.key == b"q1"  # the request's key, as the answer has none
    assert answer.context is not None
    assert answer.context.correlation_id == ctx.correlation_id
    assert answer.context.causation_id == ctx.intent_id
    assert answer.context.trace == ("oracle",)

    assert answer.header("pf-mac")  # the engine's own intents are sealed
    assert dead.header("pf-reason") == "effect-error"
    assert dead.header("pf-reactor") == "oracle"
    assert "no reply_to" in (dead.header("pf-error") or "")
    assert dead.header("pf-source") == f"{source}/{lost.partition}/{lost.offset}"


# -- async reactors ----------------------------------------------------------------------


async def test_async_reactors(broker: str) -> None:
    topo = new_topology("async")
    source, totals = unique("adds"), unique("totals")
    topo.route(Total, totals)
    topo.route(Note, totals)

    @topo.reactor(Add, topic=source, state=Tally, public=True)
    async def slow_tally(intent: Add, ctx: Context, state: Tally) -> tuple[Tally, Total]:
        await asyncio.sleep(0.001)
        new = Tally(count=state.count + 1, total=state.total + intent.n)
        return new, Total(key=intent.key, total=new.total)

    @topo.reactor(Add, topic=source, public=True)
    async def echo(intent: Add, ctx: Context) -> Any:
        await asyncio.sleep(0)
        return emit(Note(key=intent.key, text=str(intent.n)), topic=totals)

    async with running(topo, broker) as run:
        for key, n in (("a", 1), ("b", 2), ("a", 3), ("b", 4), ("c", 5)):
            await run.send(Add(key=key, n=n))
        out = await run.wait_for(totals, 10)
        assert run.state("slow_tally", "a") == Tally(count=2, total=4)
        assert run.state("slow_tally", "b") == Tally(count=2, total=6)
        assert run.state("slow_tally", "c") == Tally(count=1, total=5)

    got = intents(out)
    assert sorted((t.key, t.total) for t in got if isinstance(t, Total)) == [
        ("a", 1),
        ("a", 4),
        ("b", 2),
        ("b", 6),
        ("c", 5),
    ]
    assert sorted((t.key, t.text) for t in got if isinstance(t, Note)) == [
        ("a", "1"),
        ("a", "3"),
        ("b", "2"),
        ("b", "4"),
        ("c", "5"),
    ]
