"""Reminders: durable (they fire after a restart), periodic, cancelled with forget, and
after downtime by their misfire policy (virtual time, TestDriver)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel
from support.running import WAIT, new_topology, running, unique

from packetflow import Context, Intent, TestDriver, Topology
from packetflow.actors import Reminder, actor, forget, remind
from packetflow.actors.reminders import FIRE_ALL_LIMIT, firings

WATCH = Context(principal="tester", capabilities=["watch:*"])


class Watch(Intent, type_name="rem.Watch", key="device", requires=["watch:device/{device}"]):
    device: str
    every: float | None = None
    after: float = 0.2
    misfire: str = "coalesce"


class Unwatch(Intent, type_name="rem.Unwatch", key="device", requires=["watch:device/{device}"]):
    device: str


class Seen(BaseModel):
    fired: list[int] = []  # each reminder's missed count
    by: str | None = None  # the principal of the reminder's context


def _devices() -> Topology:
    topo = new_topology("rem", allow_unsigned=True)

    @actor(topo, Watch | Unwatch | Reminder, state=Seen, topic=unique("devices"))
    def device(message: Watch | Unwatch | Reminder, ctx: Context, seen: Seen):  # type: ignore[no-untyped-def]
        match message:
            case Watch(after=after, every=every, misfire=misfire):
                return seen, remind("check", after=after, every=every, misfire=misfire)  # type: ignore[arg-type]
            case Unwatch():
                return seen, forget("check")
            case Reminder(missed=missed):
                return Seen(fired=[*seen.fired, missed], by=ctx.principal), None
        raise AssertionError(message)

    return topo


async def _until_fired(run, device: str, times: int) -> Seen:  # type: ignore[no-untyped-def]
    for _ in range(int(WAIT / 0.05)):
        await run.idle()
        seen = run.state("device", device)
        if seen is not None and len(seen.fired) >= times:
            return seen  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{device}: fired {run.state('device', device)}, wanted {times}")


async def test_a_reminder_set_before_a_restart_fires_after_it(broker: str) -> None:
    topo = _devices()
    async with running(topo, broker) as run:
        await run.send(Watch(device="d1", after=2.0), WATCH)  # well after this worker stops
        await run.idle()
        assert run.state("device", "d1") == Seen()  # not yet
    async with running(topo, broker) as run:  # a new worker: the timer came back with it
        seen = await _until_fired(run, "d1", 1)
        assert seen == Seen(fired=[0], by="tester")  # in the context of the Watch


async def test_a_periodic_reminder_fires_until_forgotten(broker: str) -> None:
    topo = _devices()
    async with running(topo, broker) as run:
        await run.send(Watch(device="d1", after=0.05, every=0.05), WATCH)
        await _until_fired(run, "d1", 3)
        await run.send(Unwatch(device="d1"), WATCH)
        await run.idle()
        fired = len(run.state("device", "d1").fired)
        await asyncio.sleep(0.3)
        await run.idle()
        assert len(run.state("device", "d1").fired) == fired


@pytest.mark.parametrize(
    ("misfire", "now_fired", "later_fired"),
    [
        ("coalesce", [8], [8, 0]),  # once (the 9th), saying 8 were missed
        ("fire_all", [0] * 9, [0] * 10),  # every missed one
        ("skip", [], [9]),  # none now; the next on schedule says 9 were skipped
    ],
)
def test_after_downtime_a_periodic_reminder_fires_by_its_misfire_policy(
    misfire: str, now_fired: list[int], later_fired: list[int]
) -> None:
    with TestDriver(_devices()) as driver:
        driver.send(Watch(device="d1", after=10, every=10, misfire=misfire), context=WATCH)
        driver.clock.advance(95)  # the worker was away while due at 10, 20, ..., 90
        driver.advance(0)
        assert driver.state("device", "d1").fired == now_fired
        driver.advance(10)  # the next one on schedule, at 100
        assert driver.state("device", "d1").fired == later_fired


def test_fire_all_sends_at_most_its_limit_at_once() -> None:
    times, missed, nxt = firings(0, 1_000_000, 10, "fire_all")
    assert (len(times), missed, nxt) == (FIRE_ALL_LIMIT, 100_001 - FIRE_ALL_LIMIT, 1_000_010)
    assert times[-1] == 1_000_000


def test_the_test_driver_shows_an_actor_whole() -> None:
    """``driver.actor_state``: state, status and reminders, as ``packetflow actors show``."""
    with TestDriver(_devices()) as driver:
        driver.send(Watch(device="d1", after=30, every=60), context=WATCH)
        view = driver.actor_state("device", "d1")
        assert (view.actor_type, view.actor, view.status) == ("device", "d1", "active")
        assert view.state == Seen()
        assert set(view.reminders) == {"check"}
        assert view.reminders["check"]["every"] == 60
        driver.advance(30)
        assert driver.actor_state("device", "d1").state.fired == [0]
        assert driver.actor_state("device", "nobody").state is None
