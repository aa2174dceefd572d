"""Schedules held by one worker, its restart on them, and firings per second, on Kafka.

``python -m benchmarks.schedules [--schedules N] [--burst M] [--bootstrap host:port]``: a
worker process (``packetflow worker benchmarks/sched_topology.py``) takes N one-off
schedules due over the next hour; its RSS is read once it holds them all (the changelog
says so). It is stopped and started again: the restore of the schedules from the changelog
(their timers are set again from them) is timed, from process start to partitions held and
to the worker's own restore log lines. Then M schedules all due at one instant: firings per
second from that instant to the last firing's record. Printed, not asserted: see the
README's Temporal section.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

from benchmarks import broker as brokers
from benchmarks import sched_topology
from packetflow import Client, Context, KeyStore
from packetflow.temporal import at
from packetflow.temporal.operate import read_schedules

OPS = Context(principal="bench", capabilities=["tick:*", "schedule:*"])
MODULE = "benchmarks/sched_topology.py"


def _worker(url: str, namespace: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "packetflow", "worker", MODULE, "--broker", url,
         "--log-level", "info"],
        env={**_env(), "PACKETFLOW_NAMESPACE": namespace}, stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def _env() -> dict[str, str]:
    """This environment without PACKETFLOW_ settings, and a keys directory holding a worker
    secret (firings are sealed)."""
    keys = Path(tempfile.gettempdir()) / "schedbench-keys"
    if not (keys / "worker.secret").exists():
        KeyStore(str(keys)).write_secret()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKETFLOW_")}
    return {**env, "PACKETFLOW_KEYS": str(keys)}


async def _wait_log(log: Path, pattern: str, after: int, timeout: float) -> float:
    """Seconds until ``pattern`` shows in the log past byte ``after``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if re.search(pattern, log.read_text(errors="replace")[after:]):
            return time.monotonic() - began
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no {pattern!r} in {log} after {timeout}s")


async def run(url: str, count: int, burst: int) -> None:
    namespace = f"schedbench-{uuid.uuid4().hex[:8]}"
    topology = copy.copy(sched_topology.topology)
    topology.namespace = namespace
    schedules = sched_topology.schedules
    log = Path(f"/tmp/{namespace}.log")
    proc = _worker(url, namespace, log)
    try:
        await _wait_log(log, r"assigned .*schedules\[", 0, 120)
        rng = random.Random(1)
        now = datetime.now(UTC)
        async with Client(url, topology) as client:
            began = time.perf_counter()
            for start in range(0, count, 5_000):
                await client.send_many([
                    (schedules.create(sched_topology.Tick(id=f"h{i}"),
                                      at(now + timedelta(seconds=rng.uniform(600, 3600))),
                                      id=f"h{i}"), OPS)
                    for i in range(start, min(start + 5_000, count))
                ])  # fmt: skip
            while len(await read_schedules(client.transport, topology)) < count:
                await asyncio.sleep(1.0)
            took = time.perf_counter() - began
            rss = psutil.Process(proc.pid).memory_info().rss / 2**20
            print(f"held: {count:,} schedules taken in {took:.1f} s ({count / took:,.0f}/s, "
                  f"sent to committed in the changelog); worker RSS {rss:.0f} MiB")  # fmt: skip

            proc.terminate()
            proc.wait(60)
            mark = log.stat().st_size
            began = time.perf_counter()
            proc = _worker(url, namespace, log)
            held = await _wait_log(log, r"assigned .*schedules\[", mark, 300)
            text = log.read_text(errors="replace")[mark:]
            restores = re.findall(r"restored (\d+) changelog records of \S+ in ([\d.]+) s", text)
            records = sum(int(n) for n, _ in restores)
            seconds = sum(float(s) for _, s in restores)
            print(f"restart: partitions held {held:.1f} s after process start; "
                  f"{records:,} changelog records restored in {seconds:.2f} s")  # fmt: skip

            instant = datetime.now(UTC) + timedelta(seconds=15)
            for start in range(0, burst, 5_000):
                await client.send_many([
                    (schedules.create(sched_topology.Tick(id=f"b{i}"), at(instant),
                                      id=f"b{i}"), OPS)
                    for i in range(start, min(start + 5_000, burst))
                ])  # fmt: skip
            ticks = await client.wait_for("ticks", burst, timeout=600)
            last = max(r.record.timestamp for r in ticks)
            span = (last - instant.timestamp() * 1000) / 1000
            print(f"firings: {burst:,} schedules due at one instant fired in {span:.1f} s "
                  f"({burst / span:,.0f}/s), beside the {count:,} held")  # fmt: skip
    finally:
        brokers.end_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=20_000)
    parser.add_argument("--bootstrap", help="host:port (default $PACKETFLOW_TEST_BOOTSTRAP)")
    args = parser.parse_args()
    brokers.run_on_kafka(args.bootstrap, lambda url: run(url, args.schedules, args.burst))


if __name__ == "__main__":
    main()
