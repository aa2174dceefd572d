"""What no ``try`` can catch, on real Kafka with real worker processes: a record that kills
every worker that takes it, a reactor that never returns, a worker killed and restarted, a
stalled worker (a zombie) and a transaction left open by a SIGKILL.

Figures the tests measure are printed (run with ``-s``) and bounded generously; the README
reports them.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTP
from support import crashproc, markproc
from support.workerproc import WorkerProcess, logs, new_namespace, topology_in, wait_split

from packetflow import Client, Context

pytestmark = pytest.mark.kafka

CRASH = "tests/support/crashproc.py"
MARKS = "tests/support/markproc.py"


async def _until(check: Callable[[], Any], timeout: float, what: str, workers: Any) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"no {what} after {timeout}s\n{logs(workers)}"
        await asyncio.sleep(0.05)


async def test_a_record_that_kills_every_worker_is_set_aside_after_three_deaths(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, crashproc.topology)
    args = ["--instance-id", "crash-1"]
    async with Client(kafka_url, topology) as client:
        sent = await client.send_many(crashproc.jobs(*range(11), poison=5))
        workers = [spawn("crash-0", namespace, module=CRASH, args=args)]
        deadline = time.monotonic() + 120
        while True:
            dead = await client.read(topology.dead_letter_topic)
            if dead and await crashproc.done(client) >= set(range(11)) - {5}:
                break
            if workers[-1].proc.poll() is not None:
                assert workers[-1].proc.returncode == -signal.SIGKILL, logs(workers)
                workers.append(spawn(f"crash-{len(workers)}", namespace, module=CRASH,
                                     args=args))  # the supervisor's restart
            assert time.monotonic() < deadline, logs(workers)
            await asyncio.sleep(0.05)
        deaths = len(workers) - 1
        assert workers[-1].proc.poll() is None  # the last one lives on
        (culprit,) = dead
        done = await crashproc.done(client)
    assert deaths == topology.crash_loop_limit == 3, logs(workers)
    assert culprit.header("pf-reason") == "crash-loop"
    poisoned = sent[5]
    assert culprit.header("pf-source") == f"{poisoned.topic}/{poisoned.partition}/{poisoned.offset}"
    assert culprit.intent == crashproc.Job(key="k", seq=5, poison=True)  # byte for byte
    assert done == set(range(11)) - {5}
    assert "set aside as crash-loop" in workers[-1].log()
    assert "one record at a time" in workers[-2].log()  # the probe that found it


async def test_a_reactor_that_never_returns_ends_its_worker(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, crashproc.topology)
    worker = spawn("hang", namespace, module=CRASH, args=["--hang-limit", "2"])
    async with Client(kafka_url, topology) as client:
        await client.send_many(crashproc.jobs(0, hang=0))
        began = time.monotonic()
        while worker.proc.poll() is None:
            assert time.monotonic() - began < 60, worker.log()
            await asyncio.sleep(0.1)
    assert worker.proc.returncode == 70, worker.log()
    assert "event loop has been stuck" in worker.log()
    assert "time.sleep" in worker.log() or "crashproc.py" in worker.log()  # where it hung


async def test_a_worker_restarted_with_its_instance_id_resumes_at_once(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, crashproc.topology)
    args = ["--instance-id", "fast-1"]
    first = spawn("fast-a", namespace, module=CRASH, args=args)
    await first.wait_log(r"assigned .*jobs\[", timeout=60)
    async with Client(kafka_url, topology) as client:
        await client.send_many(crashproc.jobs(0))
        await _until(lambda: _has(client, {0}), 30, "first job", [first])
        first.kill()  # SIGKILL: no goodbye to the group
        killed = time.monotonic()
        await client.send_many(crashproc.jobs(1))
        second = spawn("fast-b", namespace, module=CRASH, args=args)
        await _until(lambda: _has(client, {0, 1}), 30, "the job sent after the kill",
                     [first, second])
        resumed = time.monotonic() - killed
    print(f"\nrestart with the same instance id: processing again {resumed:.2f}s after SIGKILL")
    assert resumed < 10.0, logs([first, second])  # the group's session timeout is 10 s


async def _has(client: Client, seqs: set[int]) -> bool:
    return seqs <= await crashproc.done(client)


async def test_a_graceful_stop_hands_a_static_members_partitions_over_promptly(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    namespace = new_namespace()
    every = {f"{namespace}.jobs[{p}]" for p in range(4)}
    a = spawn("static-a", namespace, module=CRASH, args=["--instance-id", "static-a"])
    b = spawn("static-b", namespace, module=CRASH, args=["--instance-id", "static-b"])
    await wait_split([a, b], every, timeout=60)
    began = time.monotonic()
    await a.terminate()
    await _until(lambda: _holds(b, every), 30, "hand-over", [a, b])
    took = time.monotonic() - began
    print(f"\ngraceful stop of a static member: partitions moved in {took:.2f}s")
    assert took < 8.0, logs([a, b])  # without the LeaveGroup it waits out the 10 s session


async def _holds(worker: WorkerProcess, partitions: set[str]) -> bool:
    return worker.assignment() == partitions


# -- exactly-once ------------------------------------------------------------------------


async def _marked(bootstrap: str, topic: str, isolation: str) -> list[Any]:
    """Every record on ``topic`` (4 partitions) as a reader with ``isolation`` sees it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        tps = [AioTP(topic, p) for p in range(4)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        out = []
        while True:
            positions = [await consumer.position(tp) for tp in tps]
            if all(pos >= ends[tp] for pos, tp in zip(positions, tps, strict=True)):
                return out
            batch = await consumer.getmany(timeout_ms=500)
            out.extend(m for msgs in batch.values() for m in msgs)
    finally:
        await consumer.stop()


async def test_a_killed_transaction_is_aborted_and_never_read_committed(
    spawn: Callable[..., WorkerProcess], kafka_url: str, kafka_bootstrap: str
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, markproc.topology)
    args = ["--instance-id", "abort-1"]
    first = spawn("abort-a", namespace, module=MARKS, args=args, env={"PF_TEST_STALL": "30"})
    await first.wait_log(r"assigned .*marks\[", timeout=60)
    marked = topology.physical("marked")
    async with Client(kafka_url, topology) as client:
        await client.send(markproc.Mark(name="m1"), context=Context.new())
        # acknowledged inside the open transaction: a read-uncommitted reader sees it
        await _until(lambda: _marked(kafka_bootstrap, marked, "read_uncommitted"), 30,
                     "the Marked in the open transaction", [first])
        assert await _marked(kafka_bootstrap, marked, "read_committed") == []
        first.kill()
        second = spawn("abort-b", namespace, module=MARKS, args=args)
        committed = await _until(lambda: _marked(kafka_bootstrap, marked, "read_committed"), 60,
                                 "the Marked of the restarted worker", [first, second])
        uncommitted = await _marked(kafka_bootstrap, marked, "read_uncommitted")
    assert len(committed) == 1, logs([first, second])
    assert len(uncommitted) == 2  # the killed worker's, in its aborted transaction, and this one
    pids = {m.value for m in uncommitted} - {m.value for m in committed}
    assert str(first.proc.pid).encode() in next(iter(pids))  # the aborted one is the dead's


async def test_a_zombie_worker_is_fenced_and_commits_nothing_twice(
    spawn: Callable[..., WorkerProcess], kafka_url: str, kafka_bootstrap: str
) -> None:
    """A worker that stalls mid-transaction (SIGSTOP: a long GC pause, a frozen VM) while
    its partitions move to another worker must not commit what the other did again."""
    namespace = new_namespace()
    options = "?session_timeout_ms=6000&heartbeat_interval_ms=1000"  # txn timeout: 4 s
    url = kafka_url + options
    topology = topology_in(namespace, markproc.topology)
    zombie = spawn("zombie", namespace, url, module=MARKS, args=["--instance-id", "zombie"],
                   env={"PF_TEST_STALL": "3"})
    await zombie.wait_log(r"assigned .*marks\[", timeout=60)
    marked = topology.physical("marked")
    async with Client(kafka_url, topology) as client:
        await client.send(markproc.Mark(name="z1"), context=Context.new())
        await _until(lambda: _marked(kafka_bootstrap, marked, "read_uncommitted"), 30,
                     "the Marked in the open transaction", [zombie])
        zombie.proc.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        other = spawn("other", namespace, url, module=MARKS, args=["--instance-id", "other"])
        committed = await _until(lambda: _marked(kafka_bootstrap, marked, "read_committed"),
                                 60, "the other worker's Marked", [zombie, other])
        took_over = time.monotonic() - stopped
        zombie.proc.send_signal(signal.SIGCONT)  # it wakes up mid-transaction
        (exit_code,) = await _until(lambda: _exited(zombie), 30, "the zombie to stop",
                                    [zombie, other])
        await asyncio.sleep(1.0)
        final = await _marked(kafka_bootstrap, marked, "read_committed")
    print(f"\nzombie: partitions taken over {took_over:.1f}s after the stall; "
          f"the zombie exited with {exit_code}")
    assert len(committed) == len(final) == 1, logs([zombie, other])
    assert exit_code not in (None, 0)
    assert "fenced" in zombie.log().lower(), zombie.log()


async def _exited(worker: WorkerProcess) -> tuple[int] | None:
    code = worker.proc.poll()
    return None if code is None else (code,)
