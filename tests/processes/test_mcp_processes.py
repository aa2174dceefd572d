"""The durable MCP client effect across a worker's death, on real Kafka with real worker
processes (``tests/support/mcptools.py``, exactly-once): a worker SIGKILLed while its tool
calls are under way (the tool server has seen them start) is replaced, and each caller gets
exactly one result: ``unknown-outcome`` for the tool that is not idempotent (never invoked
again), ``ok`` for the idempotent one (invoked again by the new worker)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import mcptools
from support.mcptools import Lookup, invocations
from support.workerproc import WorkerProcess, logs, new_namespace, topology_in, wait_records

from packetflow import Client, Context
from packetflow.engine.mcpcall import McpResult

pytestmark = pytest.mark.kafka

MODULE = "tests/support/mcptools.py"


async def test_a_worker_killed_mid_call_leaves_one_result_per_call(
    spawn: Callable[..., WorkerProcess], kafka_url: str, tmp_path: Path
) -> None:
    namespace = new_namespace()
    topology = topology_in(namespace, mcptools.topology)
    log = tmp_path / "invocations"
    # the same instance id: the second worker takes the partitions (and the transactional
    # id, aborting what the first left open) at once
    env = {"MCPTOOLS_LOG": str(log), "PACKETFLOW_INSTANCE_ID": "mcp-1"}
    first = spawn("first", namespace, module=MODULE, env=env)
    await first.wait_log(r"assigned .*mcp\.calls")
    context = Context.new("tester", ["look:up/*", "call:mcp/tools/*"])
    async with Client(kafka_url, topology) as client:
        await client.send(Lookup(key="once", tool="record", seconds=120), context=context)
        await client.send(Lookup(key="again", tool="record_idem", seconds=120), context=context)
        deadline = time.monotonic() + 30
        while not (invocations(log, "once") and invocations(log, "again")):  # another process
            assert time.monotonic() < deadline, f"the calls never started\n{first.log()}"
            await asyncio.sleep(0.05)
        first.kill()  # SIGKILL, mid-call

        second = spawn("second", namespace, module=MODULE, env=env)
        await wait_records(client, "lookups", 4, [first, second], timeout=60)  # 2 asks, 2 results
        await second.terminate()  # what it committed is all it will ever send
        received = await client.read("lookups")
    results = {r.record.key: r.intent for r in received if isinstance(r.intent, McpResult)}
    assert len(received) == 4, [r.intent for r in received]
    once, again = results[b"once"], results[b"again"]
    assert once.outcome == "unknown-outcome", logs([first, second])
    assert again.outcome == "ok", logs([first, second])
    assert again.text == "recorded again"
    assert invocations(log, "once") == 1  # never re-issued
    assert invocations(log, "again") == 2  # re-issued by the second worker
    assert "was interrupted: unknown outcome" in second.log()
