"""``packetflow top`` in a pseudo-terminal shows the moving counters of a running two-worker
group, and ``packetflow inspect --format json`` the same once: read from what each worker
announces on the members topic."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable

from support.workerproc import (
    REPO,
    WORKER_KEY,
    WorkerProcess,
    cli,
    new_namespace,
    orders_topology,
    worker_env,
)

from packetflow import Client, Context, issue_token
from topologies.orders import Deposit

TELLER = issue_token("teller", ["teller:account/*"], key=WORKER_KEY, ttl=3600)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


async def _deposit(url: str, ns: str, start: int, count: int) -> None:
    async with Client(url, orders_topology(ns)) as client:
        await client.send_many([
            (Deposit(account=f"acct-{i % 7}", amount=1), Context.new(token=TELLER))
            for i in range(start, start + count)
        ])  # fmt: skip


def _processed(screen: str) -> list[int]:
    """Every 'accounts' row's processed count the screen showed, in order."""
    return [int(n) for n in re.findall(r"accounts\s*[│|]\s*(\d+)", ANSI.sub("", screen))]


async def test_top_and_inspect_show_the_whole_group(
    spawn: Callable[..., WorkerProcess], kafka_url: str
) -> None:
    ns = new_namespace()
    a = spawn("top-a", ns, module="topologies.orders")
    await a.wait_log(r"assigned .*accounts\[", timeout=60)
    b = spawn("top-b", ns, module="topologies.orders")
    await b.wait_log(r"assigned .*accounts\[", timeout=60)

    leader, follower = pty.openpty()
    top = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "top", "topologies.orders", "--broker", kafka_url,
         "--refresh", "0.5"],
        cwd=REPO, env={**worker_env(ns), "COLUMNS": "120", "LINES": "40", "TERM": "xterm"},
        stdin=follower, stdout=follower, stderr=follower, close_fds=True,
    )  # fmt: skip
    os.close(follower)
    screen = ""

    async def read_until(check: Callable[[list[int]], bool], timeout: float) -> list[int]:
        nonlocal screen
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0)
            if ready:
                try:
                    screen += os.read(leader, 65536).decode(errors="replace")
                except OSError:
                    break
            if check(_processed(screen)):
                return _processed(screen)
            await asyncio.sleep(0.1)
        shown = ANSI.sub("", screen)[-3000:]
        raise AssertionError(f"top showed {_processed(screen)[-5:]}:\n{shown}")

    try:
        await _deposit(kafka_url, ns, 0, 40)
        seen = await read_until(lambda counts: bool(counts) and counts[-1] == 40, 60)
        await _deposit(kafka_url, ns, 40, 60)
        seen = await read_until(lambda counts: bool(counts) and counts[-1] == 100, 60)
        assert 40 in seen and seen[-1] == 100  # the counter moved as the group worked
        text = ANSI.sub("", screen)
        assert "2 worker(s)" in text
    finally:
        top.terminate()
        top.wait(10)
        os.close(leader)

    result = await asyncio.to_thread(
        cli, "inspect", "topologies.orders", "--format", "json", "--broker", kafka_url,
        namespace=ns,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    group = json.loads(result.stdout)
    assert group["reactors"]["accounts"]["processed"] == 100
    assert len(group["workers"]) == 2
    assert all(w["partitions"] > 0 for w in group["workers"].values())
