"""Passivation: idle actors, and the least recently active past ``max_active``, leave
memory and come back from the store with their next message (every transport)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from support.running import WAIT, Running, new_topology, running, unique

from packetflow import Context, Intent, TestDriver, Topology, TopologyError
from packetflow.actors import Reminder, actor, forget, timer


class Bump(Intent, type_name="passive.Bump", key="counter"):
    counter: str


def _counters(**options: Any) -> Topology:
    topo = new_topology("passive")

    @actor(topo, Bump, state=0, topic=unique("counters"), public=True, **options)
    def counter(message: Bump, ctx: Context, count: int) -> tuple[int, Any]:
        return count + 1, None

    return topo


def _cached(run: Running) -> int:
    """Decoded values the actor type's main store holds in memory (the disk store's cache)."""
    return run.worker._processor.agents["counter"].store.cached  # type: ignore[union-attr, attr-defined, no-any-return]


async def test_past_max_active_the_least_recent_actor_leaves_memory_and_comes_back(
    broker: str, tmp_path: Path
) -> None:
    topo = _counters(max_active=2)
    async with running(topo, broker, state_dir=tmp_path / "state") as run:
        for name in ("a", "b", "c"):
            await run.send(Bump(counter=name))
            await run.idle()  # one at a time: "a" is the least recently active
        metrics = run.worker.metrics.snapshot()
        assert metrics["actors_active"] == {"counter": 2}
        assert (metrics["activations"], metrics["passivations"]) == ({"counter": 3}, {"counter": 1})
        assert _cached(run) == 2  # a's value left the store's cache; it stays on disk
        await run.send(Bump(counter="a"))
        await run.idle()
        assert run.state("counter", "a") == 2  # read back from the store
        metrics = run.worker.metrics.snapshot()
        assert (metrics["activations"], metrics["passivations"]) == ({"counter": 4}, {"counter": 2})


async def test_an_idle_actor_leaves_memory_after_passivate_after(
    broker: str, tmp_path: Path
) -> None:
    topo = _counters(passivate_after=0.2)
    async with running(topo, broker, state_dir=tmp_path / "state") as run:
        await run.send(Bump(counter="a"))
        await run.idle()
        for _ in range(int(WAIT / 0.05)):
            if run.worker.metrics.snapshot().get("passivations"):
                break
            await asyncio.sleep(0.05)
        assert run.worker.metrics.snapshot()["passivations"] == {"counter": 1}
        assert _cached(run) == 0
        await run.send(Bump(counter="a"))
        await run.idle()
        assert run.state("counter", "a") == 2


def test_passivation_follows_the_worker_clock() -> None:
    """Under virtual time (TestDriver) an actor passivates when the clock says it idled."""
    with TestDriver(_counters(passivate_after=60)) as driver:
        driver.send(Bump(counter="a"))
        driver.advance(30)
        assert driver.metrics.get("passivations", {}) == {}
        driver.advance(31)
        assert driver.metrics["passivations"] == {"counter": 1}
        driver.send(Bump(counter="a"))
        assert driver.state("counter", "a") == 2  # the memory store kept it
        assert driver.metrics["activations"] == {"counter": 2}


@pytest.mark.parametrize(
    ("options", "error"),
    [({"passivate_after": 0}, "passivate_after must be"), ({"max_active": 0}, "max_active must")],
)
def test_passivation_settings_are_checked(options: dict[str, Any], error: str) -> None:
    with pytest.raises(TopologyError, match=error):
        _counters(**options)


class Start(Intent, type_name="passive.Start", key="light"):
    light: str
    every: float | None = None
    stop: bool = False


class Blinks(BaseModel):
    at: list[int] = []  # scheduled times of the timer's firings (s since the test began)
    missed: int = 0


def _lights(**options: Any) -> Topology:
    topo = new_topology("timers")

    @actor(topo, Start | Reminder, state=Blinks, topic=unique("lights"), public=True, **options)
    def light(message: Start | Reminder, ctx: Context, blinks: Blinks) -> tuple[Blinks, Any]:
        match message:
            case Start(stop=True):
                return blinks, forget("blink")
            case Start(every=every):
                return blinks, timer("blink", after=10, every=every)
            case Reminder(name="blink", durable=False, scheduled=at, missed=missed):
                return Blinks(at=[*blinks.at, at // 1000], missed=blinks.missed + missed), None
        raise AssertionError(message)

    return topo


def test_an_in_memory_timer_fires_on_the_worker_clock_until_forgotten() -> None:
    with TestDriver(_lights()) as driver:
        start = int(driver.clock.time())
        driver.send(Start(light="l1", every=5))
        driver.advance(21)  # due at 10, 15, 20
        assert [t - start for t in driver.state("light", "l1").at] == [10, 15, 20]
        driver.send(Start(light="l1", stop=True))
        driver.advance(30)
        assert len(driver.state("light", "l1").at) == 3
        # nothing of it in the store: an in-memory timer is not a reminder
        assert driver.actor_state("light", "l1").reminders == {}


def test_an_in_memory_timer_dies_with_the_activation() -> None:
    """Passivated before it is due: it never fires, and its firings did not keep it active."""
    with TestDriver(_lights(passivate_after=12)) as driver:
        driver.send(Start(light="l1", every=1))
        driver.advance(11)  # fired at 10 and 11: not activity
        assert len(driver.state("light", "l1").at) == 2
        driver.advance(5)  # idle past 12 s since its message: passivated, the timer gone
        assert driver.metrics["passivations"] == {"light": 1}
        fired = len(driver.state("light", "l1").at)
        driver.advance(30)
        assert len(driver.state("light", "l1").at) == fired


async def test_in_memory_timers_do_not_survive_a_restart(broker: str) -> None:
    topo = _lights()
    async with running(topo, broker) as run:
        await run.send(Start(light="l1"))  # a one-off timer 10 s from now
        await run.idle()
        assert run.worker.next_timer() is not None
    async with running(topo, broker) as run:
        await run.idle()
        assert run.worker.next_timer() is None  # a reminder would still be due here
