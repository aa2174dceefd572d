"""Sagas on every transport (the ``broker`` fixture), on the wall clock: replies, refusals,
timeouts, denials and MCP results travel back through the broker to the saga's topic keyed
by the instance; an instance survives its worker's restart; its state is an MCP resource."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from support.mcpserved import mcp_client
from support.mcptools import stdio_command
from support.running import WAIT, Running, running, unique
from support.sagas import GRANTS, OUTCOMES, Book, Confirm, travel
from support.webshop import KEY, SECRET

from packetflow import Context, Security, Topology, issue_token
from packetflow.mcp import McpMount
from packetflow.mcp.client import StdioServer
from packetflow.orchestration import SagaOutcome
from packetflow.web import HttpService


def _topology(guarantee: str = "at_least_once", **options: Any) -> Topology:
    options.setdefault("hold", 0.2)
    topology, _ = travel(
        name=unique("travel"), namespace=unique("ns"), timeout=3.0, allow_unsigned=True,
        processing_guarantee=guarantee, partitions=2, **options,
    )  # fmt: skip
    return topology


def _as(principal: str, grants: list[str] = GRANTS) -> Context:
    return Context.new(principal=principal, capabilities=grants)


async def _outcomes(run: Running, count: int) -> dict[str, SagaOutcome]:
    received = await run.client.wait_for(OUTCOMES, count, timeout=WAIT)
    await run.idle()
    received = await run.read(OUTCOMES)
    out = {r.intent.saga_id: r.intent for r in received if isinstance(r.intent, SagaOutcome)}
    assert len(out) == len(received) == count, [r.intent for r in received]  # once each
    return out


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_sagas_end_as_their_steps_answer(broker: str, guarantee: str) -> None:
    topology = _topology(guarantee)
    no_car = [g for g in GRANTS if not g.startswith("rent:")]
    async with running(topology, broker) as run:
        await run.send(Book(trip="ok"), _as("ann"))
        await run.send(Book(trip="raise", modes={"flight": "raise"}), _as("ann"))
        await run.send(Book(trip="wrong", modes={"hotel": "wrong"}), _as("ann"))
        await run.send(Book(trip="denied"), _as("bob", no_car))
        await run.send(Book(trip="silent", modes={"insurance": "silent"}), _as("ann"))
        await run.send(Confirm(trip="ok"), _as("ann"))  # early: kept until the wait begins
        outcomes = await _outcomes(run, 5)
        undone = {trip: run.state("undo", trip) or [] for trip in outcomes}
        ok_state = run.state("trip", "ok")
    ends = {t: (o.status, o.step, o.reason) for t, o in outcomes.items()}
    assert ends == {
        "ok": ("completed", None, None),
        "raise": ("compensated", "flight", "reactor-error"),
        "wrong": ("compensated", "hotel", "unexpected-reply"),
        "denied": ("compensated", "car", "insufficient"),
        "silent": ("compensated", "insurance", "timeout"),
    }
    assert undone["ok"] == [] and undone["raise"] == []
    assert undone["wrong"] == ["flight"]
    assert undone["denied"] == ["insurance", "hotel", "flight"]
    assert undone["silent"] == ["insurance", "car", "hotel", "flight"]
    assert ok_state["status"] == "completed" and ok_state["pending"] == {}


@asynccontextmanager
async def _tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[StdioServer]:
    monkeypatch.setenv("MCPTOOLS_LOG", str(tmp_path / "invocations"))
    yield StdioServer(stdio_command(), env_from=["MCPTOOLS_LOG"])


async def test_mcp_tool_steps_complete_fail_and_are_denied(
    broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _tools(tmp_path, monkeypatch) as server:
        topology = _topology(mcp=server, confirm=False, hold=0)
        tools = [*GRANTS, "call:mcp/tools/*"]
        async with running(topology, broker) as run:
            await run.send(Book(trip="paid", modes={"payment": "charged"}), _as("ann", tools))
            await run.send(Book(trip="err", modes={"receipt": "fail"}), _as("ann", tools))
            await run.send(Book(trip="nocall"), _as("bob", GRANTS))
            outcomes = await _outcomes(run, 3)
            undone = {trip: run.state("undo", trip) or [] for trip in outcomes}
    paid, err, nocall = outcomes["paid"], outcomes["err"], outcomes["nocall"]
    assert paid.status == "completed"
    assert paid.results["payment"]["data"]["outcome"] == "ok"
    assert paid.results["payment"]["data"]["content"][0]["text"] == "charged"
    assert "receipt" not in paid.results  # skipped: its condition did not hold
    assert (err.status, err.step, err.reason) == ("compensated", "receipt", "mcp-error")
    assert "no receipt" in (err.error or "")
    assert undone["err"][0] == "payment" and undone["err"][-2:] == ["hotel", "flight"]
    assert (nocall.status, nocall.step, nocall.reason) == ("compensated", "payment",
                                                           "mcp-denied")  # fmt: skip
    assert "call:mcp/tools/echo" in (nocall.error or "")
    assert "payment" not in undone["nocall"] and undone["nocall"][-1] == "flight"


async def test_an_instance_survives_its_workers_restart(broker: str) -> None:
    topology = _topology(hold=1.0)
    async with running(topology, broker) as run:
        await run.send(Book(trip="r1"), _as("ann"))
        for _ in range(int(WAIT / 0.05)):
            await run.idle()
            state = run.state("trip", "r1")
            if state and "step:confirm" in state["pending"]:
                break
            await asyncio.sleep(0.05)
        assert list(run.state("trip", "r1")["pending"]) == ["step:confirm"]
    async with running(topology, broker) as run:  # another worker: the state from the changelog
        await run.send(Confirm(trip="r1"), _as("ann"))
        for _ in range(int(WAIT / 0.05)):
            await run.idle()
            state = run.state("trip", "r1")
            if state and "step:hold" in state["pending"]:
                break
            await asyncio.sleep(0.05)
    async with running(topology, broker) as run:  # its hold timer set again from the state
        outcome = (await _outcomes(run, 1))["r1"]
        assert outcome.status == "completed"
        history = [e[1] for e in run.state("trip", "r1")["history"]]
    assert history.count("started") == 1 and history.count("step-started") == 7


async def test_an_instance_is_an_mcp_resource_read_with_read_on_its_trip() -> None:
    topology, _ = travel(name=unique("travel"), hold=0, confirm=False,
                         security=Security(trusted_keys=[KEY], worker_secret=SECRET))  # fmt: skip
    ann = issue_token("ann", GRANTS, key=KEY, ttl=3600)
    reader = issue_token("ops", ["read:trip/t1"], key=KEY, ttl=3600)
    service = HttpService("127.0.0.1:0", mounts=[McpMount()])
    async with running(topology, "memory://saga-mcp", services=[service]) as run:
        await run.client.send(Book(trip="t1"), context=Context.new(token=ann))
        await run.client.wait_for(OUTCOMES, 1, timeout=WAIT)
        await run.idle()
        async with mcp_client(f"{service.url}/mcp", reader) as client:
            templates = (await client.list_resource_templates()).resource_templates
            assert "state://trip/{key}" in [t.uri_template for t in templates]
            result = await client.read_resource("state://trip/t1")
            value = json.loads(result.contents[0].text)["value"]  # type: ignore[union-attr]
            with pytest.raises(Exception, match="read:trip/t2"):
                await client.read_resource("state://trip/t2")
    assert value["status"] == "completed" and value["by"] == "ann"
    assert value["authority"]["token_id"] and "token" not in value["authority"]
    assert [e[1] for e in value["history"]][-1] == "completed"
    assert ann not in json.dumps(value)  # the token itself is never kept
