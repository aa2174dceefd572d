"""Members and worker services, on both transports: every worker announces itself on
``<topology>.members`` (instance, partitions, load, what its services advertise) and reads
everyone's announcements; a service lives inside the worker's lifecycle with a read-only view."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.running import WAIT, new_topology, unique

from packetflow import Client, Context, Intent, Topology, Worker
from packetflow.engine.clock import VirtualClock
from packetflow.engine.runtime.lifecycle import State
from packetflow.engine.runtime.members import MEMBER_TYPE, Member, Roster
from packetflow.engine.runtime.view import WorkerView
from packetflow.engine.transport import Record, Transport


class Ping(Intent, type_name="members.Ping", key="key"):
    key: str


def ping_topology() -> Topology:
    topo = new_topology("members", partitions=4)

    @topo.reactor(Ping, topic=unique("pings"), public=True)
    def pong(intent: Ping, ctx: Context) -> None:
        return None

    return topo


class Recorder:
    """A worker service: advertises an address, and notes what it saw and when it ran."""

    def __init__(self, address: str, events: list[str]) -> None:
        self.address, self.events = address, events
        self.view: WorkerView | None = None
        self.transport: Transport | None = None

    async def start(self, view: WorkerView, transport: Transport) -> None:
        self.view, self.transport = view, transport
        view.advertise(http=self.address)
        # a client on the worker's own transport, closed again, leaves it open for the worker
        async with Client(transport, view.topology):
            pass
        await transport.ping()
        self.events.append(f"start {self.address}")

    async def stop(self) -> None:
        assert self.view is not None and self.transport is not None
        # still able to publish: the worker's connections close after its services stop
        async with Client(self.transport, self.view.topology) as client:
            await client.send(Ping(key=self.address))
        self.events.append(f"stop {self.address}")


@contextlib.asynccontextmanager
async def worker(
    topo: Topology, url: str, name: str, events: list[str]
) -> AsyncIterator[Worker]:
    async with Worker(
        topo, url, poll_timeout=0.05, instance_id=name, services=[Recorder(name, events)],
        announce_every=1.0,
    ) as w:
        task = asyncio.create_task(w.run())
        try:
            yield w
        finally:
            w.request_stop()
            await asyncio.wait_for(task, WAIT)


async def until(check: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT * 2
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def owned(members: list[Member]) -> list[int]:
    return sorted(p for m in members for ps in m.partitions.values() for p in ps)


async def test_workers_announce_themselves_and_see_each_other(broker: str) -> None:
    topo, events = ping_topology(), []
    async with worker(topo, broker, "w-a", events) as a:
        assert a.view is not None
        await until(lambda: [m.instance_id for m in a.view.members()] == ["w-a"], "a alone")
        async with worker(topo, broker, "w-b", events) as b:
            assert b.view is not None

            def both_settled() -> bool:
                for view in (a.view, b.view):
                    members = view.members() if view else []
                    if [m.instance_id for m in members] != ["w-a", "w-b"]:
                        return False
                    if owned(members) != [0, 1, 2, 3] or not all(m.partitions for m in members):
                        return False
                return True

            await until(both_settled, "both workers, sharing the four partitions")
            seen = {m.instance_id: m for m in a.view.members()}
            assert seen["w-b"].advertised == {"http": "w-b"}  # what its service advertised
            assert seen["w-a"].pid == seen["w-b"].pid  # one process here, a real pid
            assert seen["w-a"].lag == 0 and seen["w-a"].buffered == 0
        # b stopped: its tombstone takes it off a's roster at once, and a owns everything
        await until(
            lambda: [m.instance_id for m in a.view.members()] == ["w-a"]
            and owned(a.view.members()) == [0, 1, 2, 3],
            "b gone and a announcing all four partitions",
        )
    assert events == ["start w-a", "start w-b", "stop w-b", "stop w-a"]


async def test_a_forged_announcement_is_ignored(broker: str) -> None:
    topo, events = ping_topology(), []
    async with worker(topo, broker, "w-real", events) as w:
        assert w.view is not None
        await until(lambda: len(w.view.members()) == 1, "the worker itself")
        fake = Member("w-fake", "nowhere", 1, w.clock.time() + 1000, {"x": [0, 1, 2, 3]})
        async with Client(broker, topo) as client:
            await client.send_raw(
                topo.physical(topo.members_topic),
                fake.encode(),
                key=b"w-fake",
                headers=[("pf-type", MEMBER_TYPE)],
            )
            await asyncio.sleep(1.5)  # the worker has read it (and, at 1 s, announced again)
        assert [m.instance_id for m in w.view.members()] == ["w-real"]


def test_a_member_not_heard_from_for_three_intervals_is_gone() -> None:
    clock = VirtualClock()
    roster = Roster(clock, interval=5.0, sealer=None)
    quiet = Member("quiet", "h", 1, clock.time(), {"t": [0]})
    roster.apply(Record("pf.members", 0, 0, b"quiet", quiet.encode(), [], 0))
    clock.advance(14.9)
    assert [m.instance_id for m in roster.members()] == ["quiet"]
    clock.advance(0.2)  # a crash writes no tombstone: its age says it
    assert roster.members() == []


class FailingService:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def start(self, view: WorkerView, transport: Transport) -> None:
        raise RuntimeError("port in use")

    async def stop(self) -> None:
        self.events.append("stop failing")  # never: it did not start


async def test_a_service_that_fails_to_start_fails_the_worker_and_releases_everything(
    broker: str,
) -> None:
    topo, events = ping_topology(), []
    first = Recorder("first", events)
    w = Worker(topo, broker, services=[first, FailingService(events)])
    with pytest.raises(RuntimeError, match="port in use"):
        await w.start()
    assert w.lifecycle is State.STOPPED
    assert events == ["start first", "stop first"]  # the one started is stopped, once
    await w.stop()  # idempotent
    assert events == ["start first", "stop first"]
