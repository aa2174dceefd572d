"""Escalation to a supervisor actor, one-for-one and one-for-all over a group, and the
supervision records, on every transport (the ``broker`` fixture)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pydantic import BaseModel
from support.running import WAIT, Running, new_topology, running, unique

from packetflow import Context, Intent, Topology, TopologyError
from packetflow.actors import (
    FAILED,
    STOPPED,
    Escalated,
    Supervise,
    actor,
    decide,
    escalate,
    restart,
)
from packetflow.engine.transport import partition_for_key


class Work(Intent, type_name="sup.Work", key="device", requires=["plant:device/{device}"]):
    device: str
    step: str
    fail: int = 0  # fail this many times (counted in the test's module state)


class Steps(BaseModel):
    done: list[str] = []


class Board(BaseModel):
    seen: list[str] = []  # escalations: "<actor> <cause>"


PLANT = Context(principal="tester", capabilities=["plant:device/**"])


def _plant(  # type: ignore[no-untyped-def]
    prefix: str, decision: str, *, one_for_all: bool = False, supervision=None
) -> Topology:
    """Devices grouped by the id's part before "/", supervised by a fleet actor per group
    that answers every escalation with ``decision``."""
    topo = new_topology(prefix, allow_unsigned=True, partitions=4)
    failed: dict[str, int] = {}

    @actor(topo, Escalated, state=Board, topic=unique("fleet"))
    def fleet(message: Escalated, ctx: Context, board: Board) -> tuple[Board, Any]:
        seen = Board(seen=[*board.seen, f"{message.actor} {message.cause}"])
        return seen, [decide(message, decision, one_for_all=one_for_all)]  # type: ignore[arg-type]

    @actor(topo, Work, state=Steps, topic=unique("devices"), supervisor="fleet", group="/",
           supervision=supervision or escalate())  # fmt: skip
    def device(message: Work, ctx: Context, steps: Steps) -> tuple[Steps, Any]:
        if failed.get(message.step, 0) < message.fail:
            failed[message.step] = failed.get(message.step, 0) + 1
            raise RuntimeError(f"{message.step} jammed")
        return Steps(done=[*steps.done, message.step]), None

    return topo


async def _records(run: Running, count: int) -> list[dict[str, Any]]:
    """The first ``count`` supervision records (waits for them)."""
    topic = f"{run.topology.name}.supervision"
    for _ in range(int(WAIT / 0.05)):
        got = [orjson.loads(r.record.value or b"") for r in await run.read(topic)]
        if len(got) >= count:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(got)} supervision records, not {count}: {got}")


async def _until(run: Running, device: str, done: list[str]) -> None:
    for _ in range(int(WAIT / 0.05)):
        await run.idle()
        if run.state("device", device) == Steps(done=done):
            return
        await asyncio.sleep(0.05)
    assert run.state("device", device) == Steps(done=done)


async def test_an_escalated_failure_waits_for_its_supervisor_which_resumes(broker: str) -> None:
    topo = _plant("resume", "resume")
    async with running(topo, broker) as run:
        await run.send(Work(device="g1/a", step="bad", fail=1), PLANT)
        await run.send(Work(device="g1/a", step="next"), PLANT)
        (dead,) = await run.dead_letters(1)
        assert dead.header("pf-reason") == FAILED
        assert dead.intent == Work(device="g1/a", step="bad", fail=1)
        await _until(run, "g1/a", ["next"])
        assert run.state("fleet", "g1") == Board(seen=["g1/a escalate"])
        escalated, resumed = await _records(run, 2)
        assert (escalated["decision"], escalated["by"], escalated["supervisor"]) == (
            "escalate",
            "policy",
            "g1",
        )
        assert "bad jammed" in escalated["failure"]
        assert escalated["source"].startswith(f"{topo.agents['device'].topic}/")
        assert (resumed["decision"], resumed["actor"]) == ("resume", "g1/a")
        assert resumed["by"] == "supervisor fleet/g1"


async def test_one_for_all_restart_holds_the_whole_group_then_replays(broker: str) -> None:
    topo = _plant("all-restart", "restart", one_for_all=True,
                  supervision=restart(max_restarts=0, backoff=(2.0, 2.0), jitter=0))  # fmt: skip
    async with running(topo, broker) as run:
        await run.send(Work(device="g1/b", step="first"), PLANT)
        await run.send(Work(device="g2/c", step="other"), PLANT)
        await run.idle()
        await run.send(Work(device="g1/a", step="bad", fail=1), PLANT)  # fails once
        # max_restarts=0: the first failure escalates; the decision restarts a and b
        records = await _records(run, 3)
        await run.send(Work(device="g1/b", step="second"), PLANT)  # held by the backoff
        await run.send(Work(device="g2/c", step="more"), PLANT)  # another group: not held
        await run.idle()
        assert run.state("device", "g1/b") == Steps(done=["first"])
        assert run.state("device", "g2/c") == Steps(done=["other", "more"])
        await _until(run, "g1/a", ["bad"])
        await _until(run, "g1/b", ["first", "second"])
        # records are keyed by actor: in order for each actor, not across them
        (escalated,) = [r for r in records if r["decision"] == "escalate"]
        assert (escalated["actor"], escalated["cause"]) == ("g1/a", "max-restarts")
        decided = {
            (r["actor"], r["decision"], r.get("one_for_all")) for r in records if r is not escalated
        }
        assert decided == {("g1/a", "restart", True), ("g1/b", "restart", True)}
        assert not await run.read(topo.dead_letter_topic)


async def test_one_for_all_stop_stops_every_actor_of_the_group_only(broker: str) -> None:
    topo = _plant("all-stop", "stop", one_for_all=True)
    async with running(topo, broker) as run:
        await run.send(Work(device="g1/b", step="first"), PLANT)
        await run.send(Work(device="g2/c", step="other"), PLANT)
        await run.idle()
        await run.send(Work(device="g1/a", step="bad", fail=1), PLANT)
        records = await _records(run, 3)
        assert {(r["actor"], r["decision"]) for r in records} == {
            ("g1/a", "escalate"),
            ("g1/a", "stop"),
            ("g1/b", "stop"),
        }
        await run.send(Work(device="g1/b", step="second"), PLANT)
        await run.send(Work(device="g2/c", step="more"), PLANT)
        dead = await run.dead_letters(2)  # (partitions of their own: in no set order)
        assert {d.header("pf-reason") for d in dead} == {STOPPED}
        assert sorted((d.intent.device, d.intent.step) for d in dead) == [  # type: ignore[union-attr]
            ("g1/a", "bad"),
            ("g1/b", "second"),
        ]
        assert run.state("device", "g1/b") == Steps(done=["first"])
        assert run.state("device", "g2/c") == Steps(done=["other", "more"])


async def test_restart_escalates_past_its_limit_when_there_is_a_supervisor(broker: str) -> None:
    topo = _plant("limit", "resume", supervision=restart(max_restarts=1, backoff=(0.05, 0.05)))
    async with running(topo, broker) as run:
        await run.send(Work(device="g1/a", step="bad", fail=5), PLANT)
        await run.send(Work(device="g1/a", step="next"), PLANT)
        (dead,) = await run.dead_letters(1)
        assert dead.header("pf-reason") == FAILED
        await _until(run, "g1/a", ["next"])
        assert run.state("fleet", "g1") == Board(seen=["g1/a max-restarts"])
        decisions = [r["decision"] for r in await _records(run, 3)]
        assert decisions == ["restart", "escalate", "resume"]


async def test_a_group_shares_one_partition(broker: str) -> None:
    topo = _plant("group", "resume")
    async with running(topo, broker) as run:
        devices = [f"{g}/{m}" for g in ("g1", "g2", "g3") for m in "abcdef"]
        for device in devices:
            await run.send(Work(device=device, step="s"), PLANT)
        received = await run.client.wait_for(topo.agents["device"].topic, len(devices),
                                             timeout=WAIT)  # fmt: skip
        for r in received:
            group = (r.record.key or b"").split(b"/")[0]
            assert r.record.partition == partition_for_key(group, 4), r.record.key


async def test_a_decision_only_a_worker_sent_is_taken(broker: str) -> None:
    """Anyone who can produce can send a Supervise record; unsealed, it is denied."""
    topo = _plant("forged", "resume")
    async with running(topo, broker) as run:
        await run.send(Work(device="g1/a", step="bad", fail=1), PLANT)
        await run.dead_letters(1)  # resumed: set aside
        forged = Supervise(actor_type="device", actor="g1/a", decision="stop",
                           supervisor="g1", failure="forged")  # fmt: skip
        await run.send(forged, PLANT, topic=topo.agents["device"].topic)
        (denied,) = await run.denied(1)
        await run.send(Work(device="g1/a", step="next"), PLANT)
        await _until(run, "g1/a", ["next"])  # not stopped
        assert denied.header("pf-reason")


def test_escalate_needs_a_supervisor_that_handles_escalations() -> None:
    topo = new_topology("decl")

    @actor(topo, Work, state=Steps, topic="plain")
    def plain(message: Work, ctx: Context, steps: Steps) -> tuple[Steps, Any]:
        return steps, None

    def handler(message: Work, ctx: Context, steps: Steps) -> tuple[Steps, Any]:
        return steps, None

    with pytest.raises(TopologyError, match="escalate\\(\\) needs a supervisor"):
        actor(topo, Work, state=Steps, topic="x1", name="x1", supervision=escalate())(handler)
    with pytest.raises(TopologyError, match="not an actor type declared before"):
        actor(topo, Work, state=Steps, topic="x2", name="x2", supervisor="nobody")(handler)
    with pytest.raises(TopologyError, match=r"does not handle packetflow\.actors\.Escalated"):
        actor(topo, Work, state=Steps, topic="x3", name="x3", supervisor="plain")(handler)
    with pytest.raises(TopologyError, match="non-empty separator"):
        actor(topo, Work, state=Steps, topic="x4", name="x4", group="")(handler)
