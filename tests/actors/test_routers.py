"""Routers in front of a pool of actor ids: each strategy's picks (deterministic), and a
router's tell from a reactor reaching the picked actors through the worker."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from support.running import WAIT, new_topology, running, unique

from packetflow import Context, Intent, Topology, TopologyError
from packetflow.actors import Router, actor, router
from packetflow.engine.agent import current_members
from packetflow.engine.runtime.members import Member
from packetflow.engine.transport import partition_for_key

JOBS = Context(principal="tester", capabilities=["jobs:*", "run:*"])  # run: the jobs themselves


class Job(Intent, type_name="routers.Job", key="job", requires=["run:job/{job}"]):
    job: str


class Submit(Intent, type_name="routers.Submit", key="job", requires=["jobs:job/{job}"]):
    job: str


def _pool(by: str = "key_hash", **kw) -> tuple[Topology, Router]:  # type: ignore[no-untyped-def]
    topo = new_topology("routers", allow_unsigned=True)

    @actor(topo, Job, state=0, topic=unique("pickers"))
    def picker(message: Job, ctx: Context, done: int) -> tuple[int, None]:
        return done + 1, None

    pool = router(topo, "pickers", "picker", members=["p1", "p2", "p3"], by=by, **kw)  # type: ignore[arg-type]

    @topo.reactor(Submit, topic=unique("submits"))
    def dispatch(intent: Submit, ctx: Context):  # type: ignore[no-untyped-def]
        return pool.tell(Job(job=intent.job))

    return topo, pool


def _picks(pool: Router, n: int = 9) -> list[str]:
    return [m for i in range(n) for m in pool.pick(Job(job=f"j{i}"))]


def test_each_strategy_picks_as_it_says() -> None:
    assert _picks(_pool("round_robin")[1]) == ["p1", "p2", "p3"] * 3
    keyed = _pool()[1]
    assert _picks(keyed) == _picks(keyed)  # one key, one member, every time
    assert len(set(_picks(keyed, 60))) == 3
    assert _picks(_pool("random", seed=7)[1]) == _picks(_pool("random", seed=7)[1])
    heavy = _picks(_pool("weighted", weights=[0, 0, 1])[1])
    assert set(heavy) == {"p3"}
    assert _pool("broadcast")[1].pick(Job(job="j")) == ["p1", "p2", "p3"]
    able = _pool("capability", capabilities={"p1": [], "p2": ["run:job/*"], "p3": ["run:*"]})[1]
    assert _picks(able, 4) == ["p2", "p3", "p2", "p3"]


def test_capability_routing_says_when_no_member_may_take_the_message() -> None:
    pool = _pool("capability", capabilities={"p1": ["run:job/a"]})[1]
    with pytest.raises(LookupError, match=r"no member may take routers\.Job"):
        pool.pick(Job(job="b"))


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"by": "weighted", "weights": [1]}, "one weight >= 0 per member"),
        ({"by": "capability"}, "needs each member's capabilities"),
        ({"by": "fastest"}, "by must be one of"),
    ],
)
def test_a_router_declared_wrong_is_refused(kw: dict[str, object], message: str) -> None:
    with pytest.raises(TopologyError, match=message):
        _pool(**kw)


async def test_a_routers_tell_reaches_the_picked_actors(broker: str) -> None:
    topo, pool = _pool("round_robin")
    del pool
    async with running(topo, broker) as run:
        for i in range(6):
            await run.send(Submit(job=f"j{i}"), JOBS)
        await run.idle()
        assert {m: run.state("picker", m) for m in ("p1", "p2", "p3")} == {
            "p1": 2, "p2": 2, "p3": 2,
        }  # fmt: skip
        assert Counter(r.record.key for r in await run.read(topo.agents["picker"].topic)) == {
            b"p1": 2, b"p2": 2, b"p3": 2,
        }  # fmt: skip


def _on(partition: int) -> list[str]:
    """Actor ids whose records land on ``partition`` of 2."""
    return [m for i in range(40) if partition_for_key((m := f"m{i}").encode(), 2) == partition]


def test_least_loaded_picks_members_on_the_least_loaded_worker() -> None:
    topo = new_topology("least", allow_unsigned=True)

    @actor(topo, Job, state=0, topic=unique("pickers"))
    def picker(message: Job, ctx: Context, done: int) -> tuple[int, None]:
        return done + 1, None

    (a, a2), b = _on(0)[:2], _on(1)[0]
    pool = router(topo, "pickers", "picker", members=[a, b, a2], by="least_loaded")
    topic = topo.agents["picker"].topic

    def worker(name: str, partitions: list[int], lag: int, buffered: int = 0) -> Member:
        return Member(name, "host", 1, 0.0, {topic: partitions}, buffered=buffered, lag=lag)

    busy, light = worker("w1", [0], lag=50), worker("w2", [1], lag=1, buffered=2)
    token = current_members.set(lambda: [busy, light])
    try:
        assert set(_picks(pool, 4)) == {b}
        light = worker("w2", [1], lag=60)  # now the other worker has the least load
        assert _picks(pool, 4) == [a, a2, a, a2]
        # loads equal: every member on them, rotating
        token2 = current_members.set(lambda: [worker("w1", [0], 3), worker("w2", [1], 3)])
        assert len(set(_picks(pool, 6))) == 3
        current_members.reset(token2)
    finally:
        current_members.reset(token)
    assert len(set(_picks(pool, 6))) == 3  # no load known (a client): round robin


async def test_a_least_loaded_router_sees_the_workers_announcements(broker: str) -> None:
    """Inside a worker the router reads the roster: one worker owns every partition, so
    every member is on the least loaded worker, and messages rotate over all of them."""
    topo, _ = _pool("least_loaded")
    async with running(topo, broker, announce_every=0.1) as run:
        for _ in range(int(WAIT / 0.05)):
            if run.worker.roster is not None and run.worker.roster.members():
                break
            await asyncio.sleep(0.05)
        for i in range(6):
            await run.send(Submit(job=f"j{i}"), JOBS)
        await run.idle()
        assert {m: run.state("picker", m) for m in ("p1", "p2", "p3")} == {
            "p1": 2, "p2": 2, "p3": 2,
        }  # fmt: skip
