"""Stream-table joins and re-keying, on both transports (``memory://`` and real Kafka).

A table keeps the newest row intent per key of its topic; reactors read it with
``table.get(key)``. Partitioned tables live with the stream partitions keyed like them;
global ones are on every worker. ``key_by`` moves a stream onto a new key through an
internal repartition topic so keyed state for the new key lives in one place.
"""

from __future__ import annotations

import pytest
from support.running import new_topology, running, unique

from packetflow import Context, Intent, TestDriver, Topology, TopologyError
from packetflow.streams import TableError, table


class LimitSet(Intent, type_name="tables.LimitSet", key="account"):
    account: str
    limit: int


class GuardedLimit(
    Intent, type_name="tables.GuardedLimit", key="account", requires=["configure:limits"]
):
    account: str
    limit: int


class Spend(Intent, type_name="tables.Spend", key="account"):
    account: str
    amount: int
    shop: str = "s"


class Verdict(Intent, type_name="tables.Verdict", key="account"):
    account: str
    amount: int
    limit: int | None
    ok: bool


class ShopTotal(Intent, type_name="tables.ShopTotal", key="shop"):
    shop: str
    total: int


def _judge(topo: Topology, limits: object, out: str) -> None:
    topo.route(Verdict, out)

    @topo.reactor(Spend, topic=unique("spends"), public=True)
    def judge(spend: Spend, ctx: Context) -> Verdict:
        row = limits.get(spend.account)  # type: ignore[attr-defined]
        limit = None if row is None else row.limit
        return Verdict(
            account=spend.account,
            amount=spend.amount,
            limit=limit,
            ok=limit is not None and spend.amount <= limit,
        )


@pytest.mark.parametrize("scope", ["partitioned", "global"])
async def test_a_reactor_joins_its_stream_against_a_table(broker: str, scope: str) -> None:
    topo = new_topology("join", allow_unsigned=True)
    limits = table(topo, LimitSet, topic=unique("limits"), name="limits", scope=scope, public=True)
    out = unique("verdicts")
    _judge(topo, limits, out)
    async with running(topo, broker) as run:
        await run.send(LimitSet(account="a1", limit=100))
        await run.send(LimitSet(account="a2", limit=10))
        await run.send(LimitSet(account="a1", limit=50))  # the newest row wins
        await run.idle()
        if scope == "global":  # rows reach every worker through the changelog
            for _ in range(100):
                if run.worker.state("limits", "a1") == LimitSet(account="a1", limit=50):
                    break
                await run.idle()
        for account, amount in [("a1", 40), ("a1", 60), ("a2", 11), ("a3", 1)]:
            await run.send(Spend(account=account, amount=amount))
        received = await run.wait_for(out, 4)
        verdicts = sorted(
            ((v.account, v.amount, v.limit, v.ok) for r in received if (v := r.intent)),  # type: ignore[attr-defined]
        )
        assert verdicts == [
            ("a1", 40, 50, True),
            ("a1", 60, 50, False),
            ("a2", 11, 10, False),
            ("a3", 1, None, False),
        ]
        assert run.worker.state("limits", "a2") == LimitSet(account="a2", limit=10)


async def test_table_rows_are_capability_checked(broker: str) -> None:
    topo = new_topology("guarded", allow_unsigned=True)
    limits = table(topo, GuardedLimit, topic=unique("limits"), name="limits")
    out = unique("verdicts")
    _judge(topo, limits, out)
    admin = Context.new("admin", ["configure:limits"])
    async with running(topo, broker) as run:
        await run.send(GuardedLimit(account="a1", limit=100), admin)
        await run.send(GuardedLimit(account="a1", limit=10**9), Context.new("mallory"))
        denied = await run.denied(1)
        assert denied[0].header("pf-missing") == "configure:limits"
        await run.send(Spend(account="a1", amount=500))
        (verdict,) = await run.wait_for(out, 1)
        assert verdict.intent == Verdict(account="a1", amount=500, limit=100, ok=False)


async def test_a_partitioned_table_is_restored_on_the_next_worker(broker: str) -> None:
    topo = new_topology("tablerestore", allow_unsigned=True)
    limits = table(topo, LimitSet, topic=unique("limits"), name="limits", public=True)
    out = unique("verdicts")
    _judge(topo, limits, out)
    async with running(topo, broker) as run:
        await run.send(LimitSet(account="a1", limit=70))
        await run.idle()
    async with running(topo, broker) as run:  # a new worker: rows come from the changelog
        await run.send(Spend(account="a1", amount=70))
        (verdict,) = await run.wait_for(out, 1)
        assert verdict.intent == Verdict(account="a1", amount=70, limit=70, ok=True)
        assert run.worker.metrics.restored["limits"] >= 1


def test_a_table_is_read_inside_a_worker_only() -> None:
    topo = Topology(unique("outside"), allow_unsigned=True)
    # named after the row: "limitset", on topic "limitset"
    limits = table(topo, LimitSet, public=True)
    _judge(topo, limits, "verdicts")
    with TestDriver(topo) as driver:
        driver.send(LimitSet(account="a1", limit=5))
        assert driver.state("limitset", "a1") == LimitSet(account="a1", limit=5)
        with pytest.raises(TableError, match="inside a reactor"):
            limits.get("a1")


async def test_a_key_on_another_workers_partition_is_dead_lettered_with_why() -> None:
    from packetflow import Client, Worker

    topo = Topology(unique("copart"), allow_unsigned=True, partitions=4, namespace="")
    limits = table(topo, LimitSet, topic=unique("limits"), public=True)
    spends = unique("spends")

    @topo.reactor(Spend, topic=spends, public=True)
    def judge(spend: Spend, ctx: Context) -> None:
        limits.get(spend.shop)  # keyed by shop, while the stream is keyed by account

    url = f"memory://{unique('copart')}"
    async with Worker(topo, url) as one, Worker(topo, url) as two, Client(url, topo) as client:
        for _ in range(3):  # both join the group and split the four partitions
            await one.step()
            await two.step()
        assert len(one.assignment) == len(two.assignment) == len(topo.source_topics()) * 2
        for i in range(20):
            await client.send(Spend(account=f"a{i}", amount=1, shop=f"shop-{i}"))
        for _ in range(5):
            await one.step()
            await two.step()
        dead = await client.read(topo.dead_letter_topic)
        assert dead, "some shop keys live on the other worker's partitions"
        errors = {r.header("pf-error") or "" for r in dead}
        assert all("does not own" in e and "scope='global'" in e for e in errors), errors
        assert one.metrics.processed["judge"] + two.metrics.processed["judge"] + len(dead) == 20


async def test_key_by_moves_keyed_state_to_the_new_key(broker: str) -> None:
    topo = new_topology("rekey", allow_unsigned=True)
    out = unique("shops")
    topo.route(ShopTotal, out)

    @topo.reactor(Spend, topic=unique("spends"), state=int, key_by="shop", public=True)
    def per_shop(spend: Spend, ctx: Context, total: int) -> tuple[int, ShopTotal]:
        return total + spend.amount, ShopTotal(shop=spend.shop, total=total + spend.amount)

    spends = [("a1", 5, "north"), ("a2", 7, "north"), ("a3", 1, "south"), ("a1", 2, "south")]
    async with running(topo, broker) as run:
        for account, amount, shop in spends:  # keyed by account on the way in
            await run.send(Spend(account=account, amount=amount, shop=shop))
        received = await run.wait_for(out, 4)
        finals: dict[str, int] = {}
        for r in sorted(received, key=lambda r: (r.record.partition, r.record.offset)):
            finals[r.intent.shop] = r.intent.total  # type: ignore[union-attr]
        assert finals == {"north": 12, "south": 3}
        assert run.worker.state("per_shop", "north") == 12
        repartition = f"{topo.name}.per_shop.repartition"
        assert {r.record.key for r in await run.read(repartition)} == {b"north", b"south"}


def test_two_agents_cannot_share_a_name() -> None:
    topo = Topology(unique("bad"), allow_unsigned=True)
    with pytest.raises(TopologyError, match="twice"):
        table(topo, LimitSet, name="x", public=True)
        table(topo, LimitSet, name="x", public=True)
