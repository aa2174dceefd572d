"""Schedules with real worker processes on a real Kafka broker (exactly-once): 1,000
one-off schedules due over ~30 s while a second worker joins and the first is SIGKILLed.
Every firing happens, none twice; the firing lateness (record time minus scheduled time)
is printed, p50 and p99."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from support import schedproc
from support.workerproc import WorkerProcess, logs, new_namespace, topology_in, wait_records

from packetflow import Client, Context
from packetflow.temporal import at

pytestmark = pytest.mark.kafka

MODULE = "tests/support/schedproc.py"
OPS = Context(principal="tests", capabilities=["tick:*", "schedule:*"])
COUNT, SPREAD = 1_000, 30.0  # schedules, and the seconds they are due over



async def test_every_schedule_fires_once_through_a_join_and_a_sigkill(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, schedproc.topology)
    first = spawn("sched-1", namespace, module=MODULE, args=["--instance-id", "s1"])
    await first.wait_log(r"assigned .*schedules\[", timeout=60)
    rng = random.Random(7)
    begin = datetime.now(UTC) + timedelta(seconds=5)
    due = {f"s{i:04d}": begin + timedelta(seconds=rng.uniform(0, SPREAD)) for i in range(COUNT)}
    workers = [first]
    async with Client(kafka_url, topology) as client:
        created = [
            (schedproc.schedules.create(schedproc.Tick(id=sid), at(when), id=sid), OPS)
            for sid, when in due.items()
        ]
        for start in range(0, COUNT, 200):
            await client.send_many(created[start : start + 200])
        started = time.monotonic()
        await asyncio.sleep(8)  # firings under way: a second worker joins
        workers.append(spawn("sched-2", namespace, module=MODULE, args=["--instance-id", "s2"]))
        await asyncio.sleep(max(0.0, 18 - (time.monotonic() - started)))
        first.kill()  # schedules pending on its partitions move to the second worker
        ticks = await wait_records(client, "ticks", COUNT, workers, timeout=120)
        await asyncio.sleep(2.0)  # anything fired twice would have landed by now
        ticks = await client.read("ticks")

    fired = Counter(r.intent.id for r in ticks)  # type: ignore[union-attr]
    assert [s for s, n in fired.items() if n != 1] == [], logs(workers)
    assert set(fired) == set(due)
    late = sorted(
        r.record.timestamp - int(due[r.intent.id].timestamp() * 1000)  # type: ignore[union-attr]
        for r in ticks
    )
    assert late[0] >= 0  # none early
    p50, p99 = statistics.median(late), late[int(len(late) * 0.99) - 1]
    print(f"\nfiring lateness over {COUNT} schedules, a join and a SIGKILL: "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {late[-1]:.0f} ms")  # fmt: skip
