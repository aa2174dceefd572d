"""Actors with real worker processes on a real Kafka broker (exactly-once).

``python -m packetflow worker tests/support/actorproc.py`` runs as subprocesses in the
test's own ``$PACKETFLOW_NAMESPACE``. Orders ask stock actors for reservations while a
second worker joins and the first is SIGKILLed: every order's answer arrives exactly once
(none timed out), every stock count is what a run without crashes gives, and each order's
last reminder fires once, after the move (one due while the partitions moved fires too,
once, for the order that set it).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections import Counter
from collections.abc import Callable

import pytest
from support import actorproc
from support.workerproc import WorkerProcess, cli, logs, new_namespace, topology_in, wait_records

from packetflow import Client, Context, Received

pytestmark = pytest.mark.kafka

MODULE = "tests/support/actorproc.py"
SHOP = Context(principal="tests", capabilities=["shop:*"])



def _intents(received: list[Received]) -> list[object]:
    return [r.intent for r in sorted(received, key=lambda r: (r.record.partition, r.record.offset))]


async def test_actors_mid_conversation_survive_a_join_and_a_sigkill(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, actorproc.topology)
    env = {"PF_TEST_REMIND_AFTER": "3"}
    first = spawn("actors-1", namespace, module=MODULE, args=["--instance-id", "w1"], env=env)
    await first.wait_log(r"assigned .*orders\[", timeout=60)
    count, orders, skus = 600, 30, 7
    sent = [
        actorproc.Order(order=f"o{seq % orders:02d}", seq=seq, sku=f"s{seq % skus}")
        for seq in range(count)
    ]
    workers = [first]
    async with Client(kafka_url, topology) as client:
        for start in range(0, count, 50):
            await client.send_many([(o, SHOP) for o in sent[start : start + 50]])
            if start == 200:  # a second worker joins: actors move with their partitions
                workers.append(spawn("actors-2", namespace, module=MODULE, env=env))
            if start == 400:  # asks in flight, reminders pending: the first dies
                first.kill()
            await asyncio.sleep(0.1)

        done = _intents(await wait_records(client, "done", count, workers, timeout=120))
        last = {o.order: o.seq for o in sent}
        # each order's last reminder fires after the move; one that came due while the
        # dead worker's partitions waited out the session timeout fired then, for the seq
        # it was set by (it was due), and was set again by the orders behind it
        for _ in range(600):
            reminded = _intents(await client.read("reminded"))
            latest = {r.order: r.last_seq for r in reminded}  # type: ignore[attr-defined]
            if latest == last:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # anything duplicated would have landed by now
        done = _intents(await client.read("done"))
        reminded = _intents(await client.read("reminded"))

    seen = Counter(d.seq for d in done)  # type: ignore[attr-defined]
    assert -1 not in seen, f"an ask timed out\n{logs(workers)}"
    assert [s for s, n in seen.items() if n != 1] == [], logs(workers)
    assert set(seen) == set(range(count))
    # each stock actor's reservations counted 1, 2, 3, ... exactly as without the crash
    per_sku = Counter(o.sku for o in sent)
    by_seq = {o.seq: o for o in sent}
    counts: dict[str, list[int]] = {}
    for d in done:
        counts.setdefault(by_seq[d.seq].sku, []).append(d.count)  # type: ignore[attr-defined]
    assert {sku: sorted(c) for sku, c in counts.items()} == {
        sku: list(range(1, n + 1)) for sku, n in per_sku.items()
    }
    # every order's reminder (set again by each of its orders) fired for its last order,
    # after the move, and no reminder fired twice
    fired = Counter((r.order, r.last_seq) for r in reminded)  # type: ignore[attr-defined]
    assert [k for k, n in fired.items() if n != 1] == [], logs(workers)
    assert {order: max(s for o, s in fired if o == order) for order, _ in fired} == last


async def test_the_cli_asks_an_actor_and_prints_its_answer(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    worker = spawn("ask-1", namespace, module=MODULE)
    await worker.wait_log(r"assigned .*stock\[", timeout=60)
    async with Client(kafka_url, topology_in(namespace, actorproc.topology)) as client:
        await client.send_many([(actorproc.Order(order="o1", seq=s, sku="tea"), SHOP)
                                for s in range(3)])  # fmt: skip
        await wait_records(client, "done", 3, [worker], timeout=60)

    def ask(*more: str) -> subprocess.CompletedProcess[str]:
        return cli("ask", "actorproc.Count", '{"sku": "tea"}', "--topology", MODULE,
                   "--broker", kafka_url, "--principal", "tests", *more,
                   namespace=namespace)  # fmt: skip

    answered = await asyncio.to_thread(ask, "-c", "shop:stock/tea")
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == {
        "type": "actorproc.Reserved", "data": {"sku": "tea", "seq": -1, "count": 3},
    }
    refused = await asyncio.to_thread(ask, "-c", "shop:stock/jam")
    assert refused.returncode == 1
    assert refused.stderr.startswith("refused: insufficient: tests lacks shop:stock/tea")
    assert "Traceback" not in refused.stderr
