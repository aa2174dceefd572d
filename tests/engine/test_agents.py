"""The agent contract a substrate builds on (``packetflow.engine.agent``): clock timers that
fire at their due time and survive restarts and rebalances, several stores per agent, the
``on_error`` decisions, the metrics registry, and a missing method caught at declaration.

The agents here are small and made for the test, on ``memory://`` and virtual time, the way
a new substrate would be tested (``streams/`` is the worked example)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import pytest

from packetflow import Context, Emit, Intent, TestDriver, Topology
from packetflow.core.reactor import StateSpec
from packetflow.engine.agent import (
    AgentRuntime,
    AgentServices,
    AgentSpec,
    Decision,
    Origin,
    StoreDecl,
    Timer,
)
from packetflow.engine.clock import VirtualClock
from packetflow.engine.runtime.processor import AgentStopped
from packetflow.engine.runtime.worker import Worker
from packetflow.engine.transport import Record
from packetflow.engine.transport.memory import MemoryBroker, MemoryTransport

JSON = StateSpec(initial=dict, encode=orjson.dumps, decode=orjson.loads, type_name="json")


class Remind(Intent, type_name="agents.Remind", key="key"):
    key: str
    note: str
    after: float  # seconds


class Reminded(Intent, type_name="agents.Reminded", key="key"):
    key: str
    note: str
    fired_at: float  # the worker's clock when the timer fired


# -- a reminder agent: keeps the note in one store, counts in another, fires a clock timer --

FIRED_BY: list[tuple[int, str]] = []  # (id of the runtime, key): which worker fired what


@dataclass(frozen=True, kw_only=True)
class ReminderSpec(AgentSpec):
    kind: ClassVar[str] = "reminder"
    timers: ClassVar[bool] = True

    def runtime(self, services: AgentServices) -> AgentRuntime:
        return ReminderRuntime(self, services)


class ReminderRuntime(AgentRuntime):
    def __init__(self, spec: ReminderSpec, services: AgentServices) -> None:
        self.spec, self.services = spec, services
        self.fired = services.metrics.counter(
            "packetflow_reminders_fired_total", "Reminders fired.", "reminders_fired",
            reminder=spec.name,
        )

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        assert isinstance(intent, Remind) and record.key is not None
        services = self.services
        services.store.put(record.partition, record.key, {"note": intent.note})
        seen = services.stores["seen"].get(record.partition, record.key)
        services.stores["seen"].put(record.partition, record.key, {"n": seen.get("n", 0) + 1})
        due = int((services.clock.time() + intent.after) * 1000)
        services.timers.set(record.partition, record.key, "remind", due, clock=True)

    async def on_timer(self, timer: Timer) -> None:
        services = self.services
        note = services.store.get(timer.partition, timer.key)["note"]
        services.store.delete(timer.partition, timer.key)
        key = timer.key.decode()
        FIRED_BY.append((id(self), key))
        self.fired.inc()
        reminded = Reminded(key=key, note=note, fired_at=services.clock.time())
        await services.effects.run_effects(
            [Emit(reminded, topic="reminded")], Origin(self.spec.name, Context.new(), timer.key)
        )

    def state(self, key: bytes | None) -> Any:
        return self.services.store.find(key)


def reminder_topology(name: str = "reminders", **kwargs: Any) -> Topology:
    topo = Topology(name, namespace="", partitions=2, **kwargs)
    topo.topic("reminded")
    topo.add_agent(
        ReminderSpec(
            name="reminder",
            topic="remind",
            intent_types=(Remind,),
            public=True,
            stores=(StoreDecl("", JSON), StoreDecl("seen", JSON)),
            emits=(Reminded,),
        )
    )
    return topo


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    FIRED_BY.clear()
    yield


START = 1_700_000_000.0


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_clock_timers_fire_at_their_due_time_in_order_as_virtual_time_jumps(
    guarantee: str,
) -> None:
    """Under exactly-once too: a timer fires inside a batch, so what it emits is committed
    with that batch's transaction."""
    topo = reminder_topology(processing_guarantee=guarantee)
    with TestDriver(topo, start_time=START) as driver:
        for key, after in (("late", 30), ("soon", 10), ("middle", 20)):
            driver.send(Remind(key=key, note=f"{key}!", after=after))
        assert driver.emitted("reminded") == []

        driver.advance(25)
        fired = driver.emitted("reminded")
        assert [(r.key, r.fired_at) for r in fired] == [  # type: ignore[attr-defined]
            ("soon", START + 10),
            ("middle", START + 20),
        ]
        assert driver.clock.time() == START + 25

        driver.advance(5)
        assert [r.key for r in driver.emitted("reminded")] == [  # type: ignore[attr-defined]
            "soon", "middle", "late",
        ]
        assert driver.state("reminder", "late") is None  # the agent cleared its note
        assert driver.metrics["reminders_fired"] == {"reminder": 3}


def test_setting_a_timer_again_moves_it() -> None:
    with TestDriver(reminder_topology(), start_time=START) as driver:
        driver.send(Remind(key="k", note="first", after=10))
        driver.advance(5)
        driver.send(Remind(key="k", note="second", after=10))  # now due at +15
        driver.advance(6)
        assert driver.emitted("reminded") == []
        driver.advance(4)
        (fired,) = driver.emitted("reminded")
        assert (fired.note, fired.fired_at) == ("second", START + 15)  # type: ignore[attr-defined]


async def _worker(topo: Topology, broker: MemoryBroker, clock: VirtualClock) -> Worker:
    transport = MemoryTransport("memory://agents", broker=broker)
    worker = Worker(topo, transport, clock=clock, poll_timeout=0.0, tick_interval=0.0)
    await worker.start()
    return worker


async def _settle(*workers: Worker) -> None:
    for _ in range(20):
        for worker in workers:
            await worker.step(0.0)


async def _publish(broker: MemoryBroker, topo: Topology, *intents: Intent) -> None:
    from packetflow import Client

    async with Client(MemoryTransport("memory://agents", broker=broker), topo) as client:
        for intent in intents:
            await client.send(intent)


async def _reminded(broker: MemoryBroker, topo: Topology) -> list[str]:
    from packetflow import Client

    async with Client(MemoryTransport("memory://agents", broker=broker), topo) as client:
        return sorted(r.intent.key for r in await client.read("reminded"))  # type: ignore[union-attr]


async def test_a_timer_set_before_a_restart_fires_once_after_it() -> None:
    topo, clock = reminder_topology(), VirtualClock(START)
    broker = MemoryBroker(clock=clock)
    first = await _worker(topo, broker, clock)
    await _publish(broker, topo, Remind(key="k", note="n", after=60))
    await _settle(first)
    await first.stop()  # nothing fired yet: the timer is only in the changelog

    clock.advance(61)
    second = await _worker(topo, broker, clock)
    await _settle(second)
    await second.stop()
    assert await _reminded(broker, topo) == ["k"]

    third = await _worker(topo, broker, clock)  # the fired timer is gone from the changelog
    clock.advance(100)
    await _settle(third)
    await third.stop()
    assert await _reminded(broker, topo) == ["k"]
    assert [key for _, key in FIRED_BY] == ["k"]


async def test_a_timer_fires_on_the_partitions_next_owner_after_a_rebalance() -> None:
    topo, clock = reminder_topology(), VirtualClock(START)
    broker = MemoryBroker(clock=clock)
    a = await _worker(topo, broker, clock)
    keys = [f"k{i}" for i in range(8)]  # both partitions
    await _publish(broker, topo, *(Remind(key=k, note=k, after=30) for k in keys))
    await _settle(a)
    a_runtime = id(a._processor.agents["reminder"])  # type: ignore[union-attr]

    b = await _worker(topo, broker, clock)  # joins: one partition moves from a to b
    await _settle(a, b)
    assert a.view.assignment and b.view.assignment
    clock.advance(31)
    await _settle(a, b)
    await a.stop()
    await b.stop()

    assert await _reminded(broker, topo) == sorted(keys)  # each fired once
    assert sorted(key for _, key in FIRED_BY) == sorted(keys)
    fired_by_b = {key for runtime, key in FIRED_BY if runtime != a_runtime}
    assert fired_by_b and fired_by_b != set(keys)  # b fired the moved partition's timers


# -- on_error decisions ------------------------------------------------------------------


class Job(Intent, type_name="agents.Job", key="key"):
    key: str
    fail_times: int = 0


ATTEMPTS: dict[str, int] = {}


@dataclass(frozen=True, kw_only=True)
class FlakySpec(AgentSpec):
    decision: str = "dead-letter"

    def runtime(self, services: AgentServices) -> AgentRuntime:
        return FlakyRuntime(self.decision)


class FlakyRuntime(AgentRuntime):
    def __init__(self, decision: str) -> None:
        self.decision = decision

    async def handle(self, record: Record, intent: Intent, context: Context) -> None:
        assert isinstance(intent, Job)
        ATTEMPTS[intent.key] = ATTEMPTS.get(intent.key, 0) + 1
        if ATTEMPTS[intent.key] <= intent.fail_times:
            raise ConnectionError(f"attempt {ATTEMPTS[intent.key]}")

    def on_error(self, record: Record, intent: Intent, error: Exception) -> Decision:
        return self.decision  # type: ignore[return-value]


def flaky_topology(decision: str) -> Topology:
    topo = Topology(f"flaky-{decision}", namespace="", partitions=1)
    topo.add_agent(
        FlakySpec(name="flaky", topic="jobs", intent_types=(Job,), public=True, decision=decision)
    )
    return topo


@pytest.mark.parametrize("decision", ["dead-letter", "retry"])
def test_on_error_dead_letter_or_retry(decision: str) -> None:
    ATTEMPTS.clear()
    with TestDriver(flaky_topology(decision)) as driver:
        driver.send(Job(key="once", fail_times=1))
        driver.send(Job(key="always", fail_times=100))
        dead = {r.intent.key: r for r in driver.dead_letters()}  # type: ignore[union-attr]

    if decision == "dead-letter":
        assert ATTEMPTS == {"once": 1, "always": 1}
        assert set(dead) == {"once", "always"}
    else:  # retried a few times, then set aside
        assert ATTEMPTS["once"] == 2 and "once" not in dead
        assert 2 < ATTEMPTS["always"] < 10 and set(dead) == {"always"}
    assert dead["always"].header("pf-reason") == "reactor-error"
    assert dead["always"].header("pf-reactor") == "flaky"


async def test_on_error_stop_ends_the_worker_without_committing_the_record() -> None:
    ATTEMPTS.clear()
    topo, clock = flaky_topology("stop"), VirtualClock(START)
    broker = MemoryBroker(clock=clock)
    worker = await _worker(topo, broker, clock)
    await _publish(broker, topo, Job(key="j", fail_times=1))
    with pytest.raises(AgentStopped, match="agent flaky stopped the worker: ConnectionError"):
        await _settle(worker)
    await worker.stop()

    again = await _worker(topo, broker, clock)  # the next owner tries the record again
    await _settle(again)
    await again.stop()
    assert ATTEMPTS == {"j": 2}


def test_an_agent_spec_without_a_runtime_is_refused_when_declared() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Incomplete(AgentSpec):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(name="x", topic="t", intent_types=(Job,))  # type: ignore[abstract]
