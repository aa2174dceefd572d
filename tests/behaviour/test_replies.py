"""Request/reply on both transports: ``Client.ask`` gets the reactor's ``reply(...)``, a clear
error at once when the request was set aside, or a timeout; replies are keyed by the
requester on the topology's one reply topic."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from support.running import new_topology, running, unique

from packetflow import (
    AskTimeout,
    Client,
    Context,
    Intent,
    Refused,
    RequestRefused,
    reply,
)
from packetflow.engine.codec import MAC_HEADER
from packetflow.engine.transport import partition_for_key


class Question(Intent, type_name="ask.Question", key="key"):
    key: str
    text: str


class Answer(Intent, type_name="ask.Answer"):
    text: str


class Guarded(Intent, type_name="ask.Guarded", key="key", requires=["read:thing/{key}"]):
    key: str


def oracle_topology(**kwargs: Any) -> tuple[Any, str]:
    topo = new_topology("ask", **kwargs)
    source = unique("questions")

    @topo.reactor(Question, topic=source, public=True, emits=[Answer])
    def oracle(intent: Question, ctx: Context) -> Any:
        if intent.text == "boom":
            raise RuntimeError("cannot answer that")
        if intent.text == "silence":
            return None
        return reply(Answer(text=intent.text.upper()))

    return topo, source


async def test_ask_returns_the_reply_to_each_requester(broker: str) -> None:
    topo, _ = oracle_topology()
    async with running(topo, broker) as run:
        async with Client(broker, topo, requester="alice") as alice, Client(
            broker, topo, requester="bob"
        ) as bob:
            answers = await asyncio.gather(
                *(alice.ask(Question(key=f"a{i}", text=f"a{i}"), timeout=10) for i in range(5)),
                *(bob.ask(Question(key=f"b{i}", text=f"b{i}"), timeout=10) for i in range(5)),
            )
        replies = await run.read(topo.replies_topic)

    assert answers == [Answer(text=f"A{i}") for i in range(5)] + [
        Answer(text=f"B{i}") for i in range(5)
    ]
    # one topic for every requester, each reply keyed (and so partitioned) by its requester
    assert sorted(r.record.key for r in replies) == [b"alice"] * 5 + [b"bob"] * 5
    count = topo.default_partitions
    for r in replies:
        assert r.record.partition == partition_for_key(r.record.key or b"", count)
        assert r.header(MAC_HEADER)  # replies are the engine's own intents: sealed


async def test_a_dead_lettered_request_is_refused_at_once(broker: str) -> None:
    topo, _ = oracle_topology()
    async with running(topo, broker) as run, Client(broker, topo) as client:
        started = time.monotonic()
        with pytest.raises(RequestRefused) as refused:
            await client.ask(Question(key="k", text="boom"), timeout=30)
        took = time.monotonic() - started
        await run.dead_letters(1)  # and the request itself is kept, as always

    assert refused.value.reason == "reactor-error"
    assert "cannot answer that" in refused.value.error
    assert took < 10  # the refusal, not the 30 s timeout


async def test_a_denied_request_is_refused_with_the_reason(broker: str) -> None:
    topo = new_topology("askcap", capabilities={"reader": ["read"]})
    source = unique("guarded")

    @topo.reactor(Guarded, topic=source, emits=[Answer])
    def look(intent: Guarded, ctx: Context) -> Any:
        return reply(Answer(text="seen"))

    async with running(topo, broker) as run, Client(broker, topo) as client:
        with pytest.raises(RequestRefused) as unsigned:
            await client.ask(Guarded(key="k"), timeout=30)
        await run.denied(1)

    assert unsigned.value.reason == "insufficient"
    assert "lacks read:thing/k" in unsigned.value.error
    assert unsigned.value.source.startswith(f"{source}/")


async def test_a_request_nobody_answers_times_out(broker: str) -> None:
    topo, _ = oracle_topology()
    async with running(topo, broker) as run, Client(broker, topo) as client:
        started = time.monotonic()
        with pytest.raises(AskTimeout, match=r"no reply to ask\.Question within 0\.5s"):
            await client.ask(Question(key="k", text="silence"), timeout=0.5)
        assert time.monotonic() - started < 5
        await run.idle()
        # the same client asks again afterwards: the late or missing answer left nothing behind
        assert await client.ask(Question(key="k", text="again"), timeout=10) == Answer(
            text="AGAIN"
        )


async def test_an_unsealed_reply_is_not_taken_for_the_answer(broker: str) -> None:
    """Anyone who can write the reply topic could forge an answer; a requester that holds
    the worker secret takes only sealed ones."""
    topo, _ = oracle_topology()
    async with running(topo, broker), Client(broker, topo, requester="carol") as client:
        ctx = Context.new()
        asking = asyncio.create_task(
            client.ask(Question(key="k", text="silence"), context=ctx, timeout=3)
        )
        await asyncio.sleep(0.5)
        forged = ctx.inherit("forger")
        await client.send(
            Answer(text="forged"), context=forged, topic=topo.replies_topic, key="carol"
        )
        with pytest.raises(AskTimeout):
            await asking


async def test_a_reply_of_a_type_the_topology_does_not_know_is_a_clear_error(
    broker: str,
) -> None:
    class Secret(Intent, type_name="ask.Secret"):
        text: str

    topo = new_topology("askunknown")

    @topo.reactor(Question, topic=unique("questions"), public=True)  # no emits=[Secret]
    def mumble(intent: Question, ctx: Context) -> Any:
        return reply(Secret(text="?"))

    async with running(topo, broker), Client(broker, topo) as client:
        with pytest.raises(LookupError, match=r"'ask\.Secret'.*emits="):
            await client.ask(Question(key="k", text="x"), timeout=10)


def test_refused_is_an_internal_intent() -> None:
    assert Refused.internal
    assert Refused(reason="r", error="e", source="t/0/1").intent_type == "packetflow.Refused"
