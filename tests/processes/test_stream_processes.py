"""Windows and exactly-once with real worker processes on a real Kafka broker.

``python -m packetflow worker tests/support/streamproc.py`` runs as subprocesses, each test in its
own ``$PACKETFLOW_NAMESPACE``. Every input carries a unique ``seq``; the tests check that
each one's effects are in the output exactly once, whatever happened to the workers:

- exactly-once: a worker SIGKILLed mid-stream and restarted (same instance id); a
  read-committed reader sees each balance change and each window exactly once, and the
  changelog holds the balances of a run without the crash;
- at-least-once windows: a second worker joins (partitions move, window state restored on
  the new owner), then the first leaves with SIGTERM; every input lands in exactly one
  window, none late, none twice.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from support import streamproc
from support.workerproc import (
    WorkerProcess,
    logs,
    new_namespace,
    topology_in,
    wait_records,
    wait_split,
)

from packetflow import Client, Context, Received

pytestmark = pytest.mark.kafka

MODULE = "tests/support/streamproc.py"
CAPS = Context.new("tests")  # the topology takes unsigned capabilities; Add requires none



async def _produce(
    client: Client, count: int, accounts: int, *, per_second: float, after: Callable[[int], None]
) -> list[streamproc.Add]:
    """Send ``count`` additions round-robin over ``accounts``, paced; ``after(n)`` per chunk."""
    sent = []
    chunk = 50
    for start in range(0, count, chunk):
        batch = [
            streamproc.Add(
                account=f"acct-{seq % accounts:02d}", seq=seq, amount=seq % 7 + 1, at=time.time()
            )
            for seq in range(start, min(start + chunk, count))
        ]
        await client.send_many([(add, Context.new("tests")) for add in batch])
        sent.extend(batch)
        after(len(sent))
        await asyncio.sleep(chunk / per_second)
    return sent


def _intents(received: list[Received]) -> list[object]:
    out = []
    for r in sorted(received, key=lambda r: (r.record.partition, r.record.offset)):
        assert r.intent is not None, r.record
        out.append(r.intent)
    return out


async def test_exactly_once_survives_sigkill(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, streamproc.topology)
    env = {"PF_TEST_GUARANTEE": "exactly_once", "PF_TEST_WINDOW": "count"}
    args = ["--instance-id", "w1"]
    first = spawn("eos-1", namespace, module=MODULE, args=args, env=env)
    await first.wait_log(r"assigned .*adds\[", timeout=60)
    count, accounts = 2000, 20
    async with Client(kafka_url, topology) as client:
        killed = asyncio.Event()

        def kill_mid_stream(sent: int) -> None:
            if sent >= 800 and not killed.is_set():
                first.kill()  # SIGKILL: its open transaction is left hanging
                killed.set()

        sent = await _produce(client, count, accounts, per_second=1500, after=kill_mid_stream)
        assert killed.is_set()
        second = spawn("eos-2", namespace, module=MODULE, args=args, env=env)
        workers = [first, second]

        balances = _intents(await wait_records(client, "balances", count, workers, timeout=90))
        windows = _intents(await wait_records(client, "windows", count // 10, workers, 60))
        await asyncio.sleep(1.0)  # anything duplicated would have landed by now
        balances = _intents(await client.read("balances"))
        windows = _intents(await client.read("windows"))

        # each input's balance change exactly once, in order per account, right amounts
        seen = Counter(b.seq for b in balances)  # type: ignore[attr-defined]
        assert [s for s, n in seen.items() if n != 1] == [], logs(workers)
        assert set(seen) == {a.seq for a in sent}
        expected: dict[str, int] = {}
        by_seq = {a.seq: a for a in sent}
        for b in sorted(balances, key=lambda b: b.seq):  # type: ignore[attr-defined]
            add = by_seq[b.seq]  # type: ignore[attr-defined]
            expected[add.account] = expected.get(add.account, 0) + add.amount
            assert b.balance == expected[add.account], (b, expected[add.account])  # type: ignore[attr-defined]

        # each input in exactly one count window, windows of 10 consecutive per account
        in_windows = Counter(s for w in windows for s in w.seqs)  # type: ignore[attr-defined]
        assert [s for s, n in in_windows.items() if n != 1] == []
        assert set(in_windows) == set(seen)
        for w in windows:
            assert len(w.seqs) == 10 and w.total == 10  # type: ignore[attr-defined]
            assert {by_seq[s].account for s in w.seqs} == {w.account}  # type: ignore[attr-defined]

        # the state: the changelog (read committed) holds the crash-free balances
        changelog: dict[str, int] = {}
        for r in await client.read(topology.changelog_topic("balance")):
            assert r.record.key is not None
            changelog[r.record.key.decode()] = orjson.loads(r.record.value or b"null")
        assert changelog == expected
    await second.terminate()
    assert "exactly-once" in second.log()


async def test_windows_continue_across_a_rebalance_and_a_graceful_stop(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, streamproc.topology)
    env = {"PF_TEST_WINDOW": "tumbling"}
    first = spawn("win-1", namespace, module=MODULE, env=env)
    await first.wait_log(r"assigned .*adds\[", timeout=60)
    count, accounts = 1500, 12
    every = {f"{namespace}.adds[{p}]" for p in range(topology.topics["adds"])}
    async with Client(kafka_url, topology) as client:
        joined: list[WorkerProcess] = []

        def join_mid_stream(sent: int) -> None:
            if sent >= 400 and not joined:
                joined.append(spawn("win-2", namespace, module=MODULE, env=env))

        sent = await _produce(client, count, accounts, per_second=500, after=join_mid_stream)
        second = joined[0]
        workers = [first, second]
        held = await wait_split(workers, every, timeout=60, disjoint=True)
        assert all(held), held  # both own windows' partitions now
        await first.terminate()  # its partitions, and their open windows, move to the second

        results: list[Received] = []
        deadline = time.monotonic() + 60
        while True:
            results = await client.read("windows")
            total = sum(len(r.intent.seqs) for r in results if r.intent)  # type: ignore[attr-defined]
            if total >= count or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        windows = _intents(await client.read("windows"))

        by_seq = {a.seq: a for a in sent}
        in_windows = Counter(s for w in windows for s in w.seqs)  # type: ignore[attr-defined]
        late = await client.read(topology.late_topic)
        assert late == [], [r.header("pf-error") for r in late]
        assert [s for s, n in in_windows.items() if n != 1] == [], logs(workers)
        assert set(in_windows) == set(by_seq), (
            f"{len(set(by_seq) - set(in_windows))} inputs in no window\n{logs(workers)}"
        )
        for w in windows:  # each input in its own account's window, by its event time
            for s in w.seqs:  # type: ignore[attr-defined]
                add = by_seq[s]
                assert add.account == w.account  # type: ignore[attr-defined]
                assert w.start <= add.at < w.start + 2  # type: ignore[attr-defined]
    await second.terminate()
