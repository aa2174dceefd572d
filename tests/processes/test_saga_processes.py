"""Sagas with real worker processes on a real Kafka broker (exactly-once): 500 trips at once
while a second worker joins and the first is SIGKILLed mid-flight. Every trip ends exactly
once, and every compensation a failed trip needs runs exactly once (read committed)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable

import pytest
from support import sagas
from support.workerproc import WorkerProcess, logs, new_namespace, topology_in, wait_records

from packetflow import Client, Context
from packetflow.orchestration import SagaOutcome

pytestmark = pytest.mark.kafka

MODULE = "tests/support/sagas.py"
COUNT = 500
ANN = Context(principal="ann", capabilities=sagas.GRANTS)


def _failing(i: int) -> bool:
    return i % 5 == 4  # its insurance fails: the car, the hotel and the flight are undone


async def test_every_saga_ends_once_and_compensates_once_through_a_join_and_a_sigkill(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, sagas.topology)
    first = spawn("saga-1", namespace, module=MODULE, args=["--instance-id", "g1"])
    await first.wait_log(r"assigned .*sagaproc\.trip\[", timeout=60)
    trips = {f"t{i:03d}": _failing(i) for i in range(COUNT)}
    books = [
        (sagas.Book(trip=t, modes={"insurance": "raise"} if fails else {}), ANN)
        for t, fails in trips.items()
    ]
    workers = [first]
    began = time.monotonic()
    async with Client(kafka_url, topology) as client:

        async def book() -> None:  # 20 trips every 0.2 s: sagas start before and after the kill
            for start in range(0, COUNT, 20):
                await client.send_many(books[start : start + 20])
                await asyncio.sleep(0.2)

        booking = asyncio.create_task(book())
        workers.append(spawn("saga-2", namespace, module=MODULE, args=["--instance-id", "g2"]))
        await first.wait_log(r"revoked[^\n]*\n(.|\n)*assigned", timeout=60)  # the 2nd joined
        first.kill()  # SIGKILL: its transaction in flight aborts, its partitions move
        at_kill = len(await client.read(sagas.OUTCOMES))
        await booking
        ended = await wait_records(client, sagas.OUTCOMES, COUNT, workers, timeout=100)
        await asyncio.sleep(2.0)  # anything sent twice would have landed by now
        ended = await client.read(sagas.OUTCOMES)
        undone = await client.read("undo")
    took = time.monotonic() - began

    outcomes = Counter(r.intent.saga_id for r in ended if isinstance(r.intent, SagaOutcome))
    assert [t for t, n in outcomes.items() if n != 1] == [], logs(workers)
    assert set(outcomes) == set(trips)
    status = {r.intent.saga_id: r.intent.status for r in ended
              if isinstance(r.intent, SagaOutcome)}  # fmt: skip
    failed = {t for t, fails in trips.items() if fails}
    assert {t for t, s in status.items() if s == "compensated"} == failed
    assert {s for t, s in status.items() if not trips[t]} == {"completed"}
    runs = Counter(
        (r.intent.trip, getattr(r.intent, "what", "hotel"))  # ReleaseHotel: the hotel's undo
        for r in undone if r.intent is not None
    )  # fmt: skip
    expected = {(t, what) for t, fails in trips.items() if fails
                for what in ("car", "hotel", "flight")}  # fmt: skip
    assert set(runs) == expected, logs(workers)
    assert set(runs.values()) == {1}  # each compensation ran exactly once
    assert at_kill < COUNT  # the SIGKILL came with sagas under way
    print(f"\n{COUNT} sagas ({len(expected)} compensations) through a join and a SIGKILL "
          f"in {took:.1f}s; {at_kill} had ended when the first worker was killed")  # fmt: skip
