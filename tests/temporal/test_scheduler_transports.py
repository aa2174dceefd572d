"""Schedules on every transport (the ``broker`` fixture), on the wall clock: they fire on
time, survive a worker's restart, and fire once each under exactly-once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support.running import WAIT, Running, new_topology, running, unique

from packetflow import Context, Intent, Topology, reply
from packetflow.temporal import Scheduler, after, every, scheduler

OPS = Context(principal="ops", capabilities=["ping:*", "schedule:*"])


class Ping(Intent, type_name="schedt.Ping", key="target", requires=["ping:target/{target}"]):
    target: str


def _pinging(guarantee: str = "at_least_once") -> tuple[Topology, Scheduler]:
    topo = new_topology("sched", allow_unsigned=True, processing_guarantee=guarantee)
    schedules = scheduler(topo)

    @topo.reactor(Ping, topic=unique("pings"), state=int)
    def pings(ping: Ping, ctx: Context, count: int) -> tuple[int, None]:
        return count + 1, None

    return topo, schedules


async def _until(run: Running, target: str, count: int) -> None:
    for _ in range(int(WAIT / 0.05)):
        await run.idle()
        if (run.state("pings", target) or 0) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{target}: {run.state('pings', target)} pings, wanted {count}")


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_schedule_fires_on_the_wall_clock_as_often_as_it_says(
    broker: str, guarantee: str
) -> None:
    topo, schedules = _pinging(guarantee)
    async with running(topo, broker) as run:
        await schedules.add(run.client, Ping(target="t1"), every(0.3, max_count=3), id="p1",
                            context=OPS)  # fmt: skip
        await _until(run, "t1", 3)
        await asyncio.sleep(0.7)  # a fourth would have come by now
        await run.idle()
        sent = await run.read(topo.reactors["pings"].topic)
        times = [r.context.baggage.get("scheduled") for r in sent if r.context]
        assert len(sent) == 3, times  # exactly once each, read committed
        assert len(set(times)) == 3
        assert run.state("pings", "t1") == 3
        assert run.state("scheduler", "p1") is None  # done: its count is used up


async def test_a_schedule_survives_its_workers_restart(broker: str) -> None:
    topo, schedules = _pinging()
    async with running(topo, broker) as run:
        await schedules.add(run.client, Ping(target="t2"), after(1.5), id="p2", context=OPS)
        await run.idle()
        assert run.state("scheduler", "p2") is not None

    async with running(topo, broker) as run:
        await _until(run, "t2", 1)
        assert run.state("scheduler", "p2") is None


class Pong(Intent, type_name="schedt.Pong", key="target", internal=True):
    target: str


async def test_a_firings_answer_comes_back_through_the_broker(broker: str) -> None:
    """Under ``overlap="skip"`` a firing is a request: the reactor's reply travels back to
    the scheduler's topic and lets the next one go; unanswered, the next ones are skipped."""
    topo = new_topology("schedo", allow_unsigned=True)
    schedules = scheduler(topo)

    @topo.reactor(Ping, topic=unique("pings"), state=int, emits=[Pong])
    def pings(ping: Ping, ctx: Context, count: int) -> tuple[int, Any]:
        return count + 1, (reply(Pong(target=ping.target)) if ping.target == "answered" else None)

    async with running(topo, broker) as run:
        for target in ("answered", "silent"):
            await schedules.add(run.client, Ping(target=target), every(1.0, max_count=4),
                                id=target, context=OPS, overlap="skip", run_timeout=60)  # fmt: skip
        await _until(run, "answered", 2)  # the first answer came back and let the next go
        for _ in range(int(WAIT / 0.1)):  # both schedules done: their four times passed
            await run.idle()
            if all(run.state("scheduler", t) is None for t in ("answered", "silent")):
                break
            await asyncio.sleep(0.1)
        assert run.state("scheduler", "answered") is None
        assert run.state("scheduler", "silent") is None
        assert run.state("pings", "silent") == 1  # its first run never ended: 3 skipped
        # (answered: each time whose previous answer was back in the second between them,
        # all four unless the broker was slower than that; at least the two seen above)
        assert run.state("pings", "answered") >= 2
