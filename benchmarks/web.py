"""The web ingress under load, on Kafka: one worker process serving HTTP.

``python -m benchmarks.web [--subscribers N] [--rate R] [--seconds S] [--bootstrap h:p]``:

1. N concurrent SSE subscribers on ``/live/news`` (2,000 by default) while 20 news items a
   second are published for S seconds: every subscriber must receive every item; delivery
   latency p50/p99 (publish to receipt) and the worker's RSS.
2. R ``POST /intents/webbench.Order`` a second offered for S seconds (5,000/s for 10 s by
   default; at most 256 in flight): accepted, refused, p50/p99 latency, the rate achieved,
   the worker's peak RSS, and nothing lost: the per-customer counts the worker holds add up
   to the accepted requests.

Bounded in count and time; printed, not asserted: see the README's Web section.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
import psutil

from benchmarks import broker as brokers
from benchmarks import web_topology
from packetflow import Client, Context, KeyPair, KeyStore, issue_token

MODULE = "benchmarks/web_topology.py"
CUSTOMERS = 100


def _keys() -> tuple[Path, KeyPair]:
    """A keys directory the worker trusts, and the key the bench signs tokens with."""
    keys = Path(tempfile.gettempdir()) / "webbench-keys"
    store = KeyStore(str(keys))
    if store.current_kid() is None:
        store.generate("webbench")
    return keys, store.load()


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Peak:
    """The worker's peak RSS, sampled every 100 ms while a phase runs."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.process.memory_info().rss / 2**20)
            await asyncio.sleep(0.1)

    def __enter__(self) -> Peak:
        self._task = asyncio.get_running_loop().create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def subscribers_phase(base: str, reader: str, client: Client, poster: str,
                            count: int, seconds: float, pid: int) -> None:  # fmt: skip
    received: list[list[float]] = [[] for _ in range(count)]
    ready = asyncio.Event()
    opened = 0
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=None, limits=limits) as http:

        async def follow(i: int) -> None:
            nonlocal opened
            headers = {"Authorization": f"Bearer {reader}"}
            async with http.stream("GET", "/live/news", headers=headers) as response:
                response.raise_for_status()
                opened += 1
                if opened == count:
                    ready.set()
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        sent = orjson.loads(line[5:])["data"]["sent"]
                        received[i].append(time.time() - sent)

        tasks = [asyncio.create_task(follow(i)) for i in range(count)]
        await asyncio.wait_for(ready.wait(), 120)
        await asyncio.sleep(1.0)
        with Peak(pid) as peak:
            items = int(seconds * 20)
            context = Context.new(token=poster)
            began = time.perf_counter()
            for i in range(items):
                await client.send(web_topology.News(id=f"n{i}", sent=time.time()),
                                  context=context)  # fmt: skip
                await asyncio.sleep(max(0.0, began + (i + 1) / 20 - time.perf_counter()))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and min(len(r) for r in received) < items:
                await asyncio.sleep(0.2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [x for r in received for x in r]
    complete = sum(1 for r in received if len(r) == items)
    print(f"sse: {count:,} subscribers, {items} items each ({count * items:,} deliveries): "
          f"{complete:,} received all; latency p50 {_quantile(latencies, .5) * 1000:.0f} ms, "
          f"p99 {_quantile(latencies, .99) * 1000:.0f} ms; worker RSS peak "
          f"{peak.peak:.0f} MiB")  # fmt: skip


CONNECTIONS = 128  # keep-alive connections the POSTs are spread over


async def _poster(host: str, port: int, token: str, jobs: asyncio.Queue[int | None],
                  outcome: Callable[[int, int, float], None]) -> None:  # fmt: skip
    """One keep-alive connection sending POSTs as plain HTTP/1.1: a load generator light
    enough not to be what is measured (httpx in one process topped out near 450/s)."""
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST /intents/webbench.Order HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n")  # fmt: skip
    try:
        while (i := await jobs.get()) is not None:
            body = orjson.dumps({"customer": f"c{i % CUSTOMERS}", "n": i})
            began = time.perf_counter()
            writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            outcome(i, status, time.perf_counter() - began)
    finally:
        writer.close()


async def posts_phase(base: str, token: str, rate: int, seconds: float, pid: int,
                      state_token: str) -> None:  # fmt: skip
    total = int(rate * seconds)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    accepted: dict[str, int] = {}

    def outcome(i: int, status: int, took: float) -> None:
        latencies.append(took)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 202:
            customer = f"c{i % CUSTOMERS}"
            accepted[customer] = accepted.get(customer, 0) + 1

    host, _, port = base.removeprefix("http://").partition(":")
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as http:
        jobs: asyncio.Queue[int | None] = asyncio.Queue()
        with Peak(pid) as peak:
            posters = [asyncio.create_task(_poster(host, int(port), token, jobs, outcome))
                       for _ in range(CONNECTIONS)]  # fmt: skip
            began = time.perf_counter()
            for i in range(total):  # offered at the rate, whatever the answers do
                jobs.put_nowait(i)
                await asyncio.sleep(max(0.0, began + (i + 1) / rate - time.perf_counter()))
            for _ in posters:
                jobs.put_nowait(None)
            await asyncio.gather(*posters)
            took = time.perf_counter() - began
        # nothing lost: the worker's counts add up to what was accepted
        state_headers = {"Authorization": f"Bearer {state_token}"}
        deadline = time.monotonic() + 120
        while True:
            counts = {}
            for customer in accepted:
                got = await http.get(f"/state/orders/{customer}", headers=state_headers)
                counts[customer] = got.json().get("value") if got.status_code == 200 else None
            if counts == accepted or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    done = sum(accepted.values())
    print(f"posts: {total:,} offered at {rate:,}/s for {seconds:g} s; {done:,} accepted "
          f"({done / took:,.0f}/s achieved), statuses {statuses}; latency p50 "
          f"{statistics.median(latencies) * 1000:.1f} ms, p99 "
          f"{_quantile(latencies, .99) * 1000:.1f} ms; worker RSS peak {peak.peak:.0f} MiB; "
          f"{'nothing lost' if counts == accepted else 'LOST: counts differ'}")  # fmt: skip


async def run(url: str, subscribers: int, rate: int, seconds: float) -> None:
    namespace = f"webbench-{uuid.uuid4().hex[:8]}"
    keys, key = _keys()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACKETFLOW_")}
    env.update(PACKETFLOW_KEYS=str(keys), PACKETFLOW_NAMESPACE=namespace)
    log = Path(f"/tmp/{namespace}.log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "worker", MODULE, "--broker", url,
         "--http", "127.0.0.1:0", "--log-level", "info"],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        base = None
        for _ in range(1200):
            found = re.search(r"serving HTTP on (http://\S+)", log.read_text(errors="replace"))
            if found and re.search(r"assigned .*orders\[", log.read_text(errors="replace")):
                base = found.group(1)
                break
            await asyncio.sleep(0.1)
        if base is None:
            raise RuntimeError(f"the worker did not start: see {log}")
        topology = copy.copy(web_topology.topology)
        topology.namespace = namespace
        poster = issue_token("bench", ["post:news/*"], key=key, ttl=3600)
        reader = issue_token("reader", ["read:news/*"], key=key, ttl=3600)
        orderer = issue_token("shop", ["order:customer/*"], key=key, ttl=3600)
        counter = issue_token("ops", ["read:customer/*"], key=key, ttl=3600)
        async with Client(url, topology) as client:
            await subscribers_phase(base, reader, client, poster, subscribers, seconds, proc.pid)
        await posts_phase(base, orderer, rate, seconds, proc.pid, counter)
    finally:
        brokers.end_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=2_000)
    parser.add_argument("--rate", type=int, default=5_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--bootstrap", help="host:port (default $PACKETFLOW_TEST_BOOTSTRAP)")
    args = parser.parse_args()
    brokers.run_on_kafka(
        args.bootstrap, lambda url: run(url, args.subscribers, args.rate, args.seconds)
    )


if __name__ == "__main__":
    main()
